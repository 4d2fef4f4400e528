"""'Did you mean ...?': the closest known name to a misspelled one, for error messages."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["closest", "did_you_mean"]


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``name`` (case ignored), or None when none is close."""
    import difflib  # only when a name was misspelled: it costs a command's start

    by_folded = {candidate.lower(): candidate for candidate in known}
    found = difflib.get_close_matches(name.lower(), list(by_folded), n=1)
    return by_folded[found[0]] if found else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" (did you mean x?)"`` for the closest known name, or ``""``."""
    match = closest(name, known)
    return f" (did you mean {match}?)" if match is not None else ""
