"""The task lifecycle as data: which status may follow which. Pure; no I/O."""

from collections.abc import Mapping
from datetime import datetime

from backoffice.core.errors import ConflictError
from backoffice.tasks.models import TaskStatus

TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.TODO: frozenset({TaskStatus.IN_PROGRESS, TaskStatus.BLOCKED, TaskStatus.CANCELLED}),
    TaskStatus.IN_PROGRESS: frozenset({TaskStatus.BLOCKED, TaskStatus.DONE, TaskStatus.CANCELLED}),
    TaskStatus.BLOCKED: frozenset({TaskStatus.IN_PROGRESS, TaskStatus.CANCELLED}),
    # Final, except that a finished task can be reopened.
    TaskStatus.DONE: frozenset({TaskStatus.IN_PROGRESS}),
    TaskStatus.CANCELLED: frozenset(),
}

OPEN_STATUSES = frozenset({TaskStatus.TODO, TaskStatus.IN_PROGRESS, TaskStatus.BLOCKED})


class IllegalTransitionError(ConflictError):
    title = "Illegal Status Transition"
    slug = "illegal-transition"


def _ordered(statuses: frozenset[TaskStatus]) -> list[TaskStatus]:
    return [status for status in TaskStatus if status in statuses]


def check_transition(current: TaskStatus, target: TaskStatus) -> None:
    """Staying in the same status is not a transition and always allowed."""
    allowed = TRANSITIONS[current]
    if target == current or target in allowed:
        return
    if not allowed:
        raise IllegalTransitionError(
            f"A {current} task is final: its status cannot change (it is not {target})."
        )
    names = ", ".join(_ordered(allowed))
    raise IllegalTransitionError(f"A {current} task can move to {names}; not to {target}.")


def completed_at_for(
    target: TaskStatus, completed_at: datetime | None, now: datetime
) -> datetime | None:
    """Set when a task is done (kept if it already was), cleared when it is reopened."""
    if target != TaskStatus.DONE:
        return None
    return completed_at or now
