"""Text checks shared by the gateway's codec and logic's rules."""

from __future__ import annotations


def is_encodable(text: str) -> bool:
    """Whether *text* is valid Unicode that UTF-8 can carry (JSON escapes can produce lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
