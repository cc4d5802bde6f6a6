"""Issue 13's goals as data (plan.GOALS), and their evaluation: a figure of the run, divided by
a reference (another figure of the same run, or a constant) or taken as it is, compared with a
target. PASS, FAIL, or SKIP when a figure was not measured (`--skip-startup`).

A goal whose figures come from a scenario with errors (non-2xx answers, socket errors) fails,
whatever its value: those figures measure something else."""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class Metric(StrEnum):
    REQUESTS_PER_S = "req/s"
    P99_MS = "p99 ms"
    SECONDS = "s"


class Comparison(StrEnum):
    AT_LEAST = ">="
    AT_MOST = "<="
    BELOW = "<"
    WITHIN = "within"  # |value - 1| <= target: a ratio close to 1 either way


@dataclass(frozen=True, slots=True)
class Figure:
    """One number of a run: a scenario's (or the start-up's) metric."""

    subject: str
    metric: Metric


@dataclass(frozen=True, slots=True)
class Goal:
    title: str
    figure: Figure
    comparison: Comparison
    target: float
    reference: Figure | float | None = None  # divides the figure; None: the figure as it is

    def subjects(self) -> tuple[str, ...]:
        if isinstance(self.reference, Figure):
            return (self.figure.subject, self.reference.subject)
        return (self.figure.subject,)

    def target_text(self) -> str:
        """The goal as the report prints it next to the figure, e.g. `>= 0.50x`."""
        unit = "x" if self.reference is not None else f" {self.figure.metric}"
        if self.comparison is Comparison.WITHIN:
            return f"within {self.target:.0%} of 1.00x"
        return f"{self.comparison} {self.target:.2f}{unit}"

    def how(self) -> str:
        """How the value is computed, in words."""
        own = f"{self.figure.metric} of {self.figure.subject}"
        match self.reference:
            case None:
                return own
            case Figure(subject=subject, metric=metric):
                return f"{own} / {metric} of {subject}"
            case constant:
                return f"{own} / {constant:g} {self.figure.metric} (a constant)"


class Status(StrEnum):
    PASS = "PASS"  # noqa: S105  # a verdict, not a password
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True, slots=True)
class Verdict:
    goal: Goal
    value: float | None  # None: not measured
    status: Status
    why: str = ""  # what made it fail or skip, beyond the value

    def value_text(self) -> str:
        if self.value is None:
            return "not measured"
        if self.goal.reference is None:
            return f"{self.value:.2f} {self.goal.figure.metric}"
        return f"{self.value:.2f}x"

    def short(self) -> str:
        """Next to the figure in a table: `0.23x, goal >= 0.50x: FAIL`."""
        text = f"{self.value_text()}, goal {self.goal.target_text()}: {self.status}"
        return f"{text} ({self.why})" if self.why else text

    def line(self) -> str:
        """One line of the goals section."""
        return (
            f"{self.status} {self.goal.title}: {self.value_text()} "
            f"(goal {self.goal.target_text()}; {self.goal.how()})"
            + (f"; {self.why}" if self.why else "")
        )


def _met(comparison: Comparison, value: float, target: float) -> bool:
    match comparison:
        case Comparison.AT_LEAST:
            return value >= target
        case Comparison.AT_MOST:
            return value <= target
        case Comparison.BELOW:
            return value < target
        case Comparison.WITHIN:
            return abs(value - 1) <= target


def _value(goal: Goal, figures: Mapping[Figure, float]) -> float | None:
    own = figures.get(goal.figure)
    match goal.reference:
        case None:
            return own
        case Figure() as figure:
            reference = figures.get(figure)
        case constant:
            reference = constant
    if own is None or reference is None:
        return None
    return own / reference if reference else math.nan


def evaluate(
    goals: Iterable[Goal], figures: Mapping[Figure, float], failed: Iterable[str] = ()
) -> list[Verdict]:
    """Each goal's verdict, from the run's figures; `failed` names the subjects whose runs had
    errors."""
    with_errors = set(failed)
    verdicts = []
    for goal in goals:
        value = _value(goal, figures)
        suspect = [subject for subject in goal.subjects() if subject in with_errors]
        if value is None:
            verdicts.append(Verdict(goal, None, Status.SKIP))  # its value says "not measured"
        elif suspect:
            why = "⚠ errors in " + ", ".join(suspect)
            verdicts.append(Verdict(goal, value, Status.FAIL, why))
        elif math.isnan(value):
            verdicts.append(Verdict(goal, value, Status.FAIL, "its reference is 0"))
        else:
            met = _met(goal.comparison, value, goal.target)
            verdicts.append(Verdict(goal, value, Status.PASS if met else Status.FAIL))
    return verdicts


def tally(verdicts: Iterable[Verdict]) -> str:
    """`goals: 5 PASS, 2 FAIL, 1 SKIP` (statuses that occur only)."""
    counts = dict.fromkeys(Status, 0)
    for verdict in verdicts:
        counts[verdict.status] += 1
    return "goals: " + ", ".join(f"{count} {status}" for status, count in counts.items() if count)
