"""Characters PostgreSQL `text` cannot hold, found and replaced.

PostgreSQL refuses U+0000 in any text value, and a lone surrogate (U+D800-U+DFFF, which JSON's
`\\ud800` escapes can produce) cannot even be encoded to UTF-8 to be sent. Input carrying either
is refused at the edge (core/middleware.py); what the app stores about a request on its own
account (the access log) replaces them instead.
"""

import re
from typing import Final

# NUL and every surrogate code point: one regex search is cheaper than any per-character loop.
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT: Final = "\ufffd"


def has_unstorable(value: str) -> bool:
    """Whether `value` holds a character PostgreSQL text cannot store."""
    return _UNSTORABLE.search(value) is not None


def scrub(value: str) -> str:
    """`value` with every character PostgreSQL text cannot store replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, value)
