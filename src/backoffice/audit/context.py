"""What the audit hooks need to know about the request they run in.

The access-audit middleware points `request_state` at the request's state mapping (the one
behind `request.state`): the request-id middleware has put the request id there, and
authentication adds the verified `user_id` when it succeeds (and `api_key_id`, when the
caller authenticated with an API key). The data-change hooks read both
from here, since a flush has no request at hand.
"""

from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

request_state: ContextVar[MutableMapping[str, Any] | None] = ContextVar(
    "audit_request_state", default=None
)


def current_actor() -> tuple[int | None, int | None, str | None]:
    """(verified user id, the API key it used if any, request id) of the running request;
    all None outside one."""
    state = request_state.get()
    if state is None:
        return None, None, None
    return state.get("user_id"), state.get("api_key_id"), state.get("request_id")
