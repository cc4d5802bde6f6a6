"""The task lifecycle rules, without HTTP or a database."""

import re
from datetime import UTC, datetime, timedelta
from itertools import product

import pytest

from backoffice.core.errors import ConflictError
from backoffice.tasks.models import TaskStatus
from backoffice.tasks.rules import (
    OPEN_STATUSES,
    TRANSITIONS,
    IllegalTransitionError,
    check_transition,
    completed_at_for,
)

TODO, IN_PROGRESS, BLOCKED, DONE, CANCELLED = TaskStatus

# The lifecycle as the product owner wrote it, independent of the table under test.
EXPECTED_MOVES: dict[TaskStatus, set[TaskStatus]] = {
    TODO: {IN_PROGRESS, BLOCKED, CANCELLED},
    IN_PROGRESS: {BLOCKED, DONE, CANCELLED},
    BLOCKED: {IN_PROGRESS, CANCELLED},
    DONE: {IN_PROGRESS},
    CANCELLED: set(),
}

ALL_PAIRS = list(product(TaskStatus, TaskStatus))
LEGAL_PAIRS = [
    (current, target)
    for current, target in ALL_PAIRS
    if target == current or target in EXPECTED_MOVES[current]
]
ILLEGAL_PAIRS = [pair for pair in ALL_PAIRS if pair not in LEGAL_PAIRS]

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(days=3)


def pair_id(pair: tuple[TaskStatus, TaskStatus]) -> str:
    return f"{pair[0]}->{pair[1]}"


def named(status: TaskStatus, message: str) -> bool:
    return re.search(rf"\b{status}\b", message) is not None


# --- the table ------------------------------------------------------------------------------


def test_pairs_cover_every_status_combination() -> None:
    assert len(ALL_PAIRS) == 25
    assert len(LEGAL_PAIRS) == 14  # 9 moves and 5 stays
    assert len(ILLEGAL_PAIRS) == 11


def test_transition_table_is_the_expected_lifecycle() -> None:
    assert {status: set(targets) for status, targets in TRANSITIONS.items()} == EXPECTED_MOVES


@pytest.mark.parametrize("status", list(TaskStatus))
def test_no_status_lists_itself_as_a_transition(status: TaskStatus) -> None:
    assert status not in TRANSITIONS[status]


def test_every_status_is_reachable_from_todo() -> None:
    reached = {TODO}
    frontier = [TODO]

    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)

    assert reached == set(TaskStatus)


# --- check_transition -----------------------------------------------------------------------


@pytest.mark.parametrize(("current", "target"), LEGAL_PAIRS, ids=list(map(pair_id, LEGAL_PAIRS)))
def test_check_transition_allows_a_legal_pair(current: TaskStatus, target: TaskStatus) -> None:
    check_transition(current, target)  # raises on refusal


@pytest.mark.parametrize(
    ("current", "target"), ILLEGAL_PAIRS, ids=list(map(pair_id, ILLEGAL_PAIRS))
)
def test_check_transition_refuses_an_illegal_pair_naming_what_is_allowed(
    current: TaskStatus, target: TaskStatus
) -> None:
    allowed = EXPECTED_MOVES[current]

    with pytest.raises(IllegalTransitionError) as raised:
        check_transition(current, target)

    message = str(raised.value)
    assert raised.value.detail == message
    assert named(current, message)
    assert named(target, message)
    if allowed:
        assert all(named(status, message) for status in allowed), message
    else:
        assert "final" in message
    unrelated = set(TaskStatus) - allowed - {current, target}
    assert not any(named(status, message) for status in unrelated), message


def test_check_transition_lists_the_allowed_statuses_in_lifecycle_order() -> None:
    with pytest.raises(IllegalTransitionError) as raised:
        check_transition(TODO, DONE)

    message = str(raised.value)
    positions = [message.index(status) for status in (IN_PROGRESS, BLOCKED, CANCELLED)]
    assert positions == sorted(positions)


def test_illegal_transition_error_is_a_409_conflict() -> None:
    assert issubclass(IllegalTransitionError, ConflictError)
    assert IllegalTransitionError.status_code == 409
    assert IllegalTransitionError.slug == "illegal-transition"


# --- completed_at_for -----------------------------------------------------------------------


def test_completed_at_for_done_is_now_when_not_yet_completed() -> None:
    assert completed_at_for(DONE, None, NOW) == NOW


def test_completed_at_for_done_keeps_an_earlier_completion() -> None:
    assert completed_at_for(DONE, EARLIER, NOW) == EARLIER


@pytest.mark.parametrize("completed_at", [None, EARLIER])
@pytest.mark.parametrize("target", [status for status in TaskStatus if status != DONE])
def test_completed_at_for_any_other_status_is_cleared(
    target: TaskStatus, completed_at: datetime | None
) -> None:
    assert completed_at_for(target, completed_at, NOW) is None


# --- OPEN_STATUSES --------------------------------------------------------------------------


def test_open_statuses_are_the_unfinished_ones() -> None:
    assert {TODO, IN_PROGRESS, BLOCKED} == OPEN_STATUSES


@pytest.mark.parametrize("status", sorted(OPEN_STATUSES))
def test_every_open_status_can_still_be_cancelled(status: TaskStatus) -> None:
    assert CANCELLED in TRANSITIONS[status]


@pytest.mark.parametrize("status", [DONE, CANCELLED])
def test_closed_statuses_cannot_be_cancelled_or_blocked(status: TaskStatus) -> None:
    assert status not in OPEN_STATUSES
    assert not TRANSITIONS[status] & {CANCELLED, BLOCKED}
