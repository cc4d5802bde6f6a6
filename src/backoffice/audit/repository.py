"""The audit tables, read only: data changes are appended by the database's triggers
(`changes.py`), access logs by the access-log writer, never through these repositories."""

from backoffice.audit.models import AccessLog, DataChange
from backoffice.core.repository import BaseRepository


def prefix_pattern(text: str) -> str:
    """A LIKE pattern matching what starts with `text`, its `%`, `_` and `\\` taken literally
    (a constant prefix, so a `varchar_pattern_ops` index can answer it)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


class AccessLogRepository(BaseRepository[AccessLog]):
    model = AccessLog


class DataChangeRepository(BaseRepository[DataChange]):
    model = DataChange
