"""User-facing errors: one paragraph that says what to do, printed without a traceback."""
from __future__ import annotations

import difflib
import functools
import os
import sys
import textwrap
from collections.abc import Iterable, Mapping
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., int | None])


class UserError(Exception):
    """A problem with flags, files or checkpoints that the user can fix; the message says how."""


def report_user_errors(main: F) -> F:
    """Decorator for entry points: print a UserError as ``error: ...`` and exit with status 2
    (under torchrun only rank 0 prints: every rank meets the same error)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:  # dataset.DatasetError is one too
            if os.environ.get("RANK", "0") == "0":
                message = textwrap.fill(str(error), width=100, break_long_words=False, break_on_hyphens=False)
                print(f"error: {message}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def did_you_mean(name: str, choices: Iterable[str], other_spellings: Mapping[str, str] | None = None) -> str:
    """' Did you mean 'X'?' for the choice ``name`` nearly spells (case ignored, else difflib's closest
    match), else ''. ``other_spellings`` maps further names (display names, aliases) to a choice."""
    lowered: dict[str, str] = {}
    for spelling, choice in [*((choice, choice) for choice in choices), *(other_spellings or {}).items()]:
        lowered.setdefault(spelling.lower(), choice)
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.7)
    match = lowered.get(name.lower()) or (lowered[close[0]] if close else None)
    return f" Did you mean '{match}'?" if match else ""
