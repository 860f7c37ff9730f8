"""Comma-separated option values ("2,4,8") as typed lists, with a one-line error that names the flag."""
from __future__ import annotations

from typing import Callable, Iterable

WHAT = {int: "integers", float: "numbers", str: "names"}


def parse(text: str, flag: str, kind: Callable = int, *, low: float | None = None,
          choices: Iterable[str] | None = None, required: bool = False, error: type[Exception] = ValueError) -> list:
    """The values of `text` as `kind`, blanks skipped, in order. With `low`, each must be at least that;
    with `choices`, each one of them; with `required` (or `choices`), there must be one at least.
    `error` is what is raised (ValueError, or a subclass the caller's messages go through)."""
    what = WHAT.get(kind, "values")
    try:
        values = [kind(p.strip()) for p in text.split(",") if p.strip()]
    except ValueError:
        raise error(f"{flag}: expected comma-separated {what}, got {text!r}") from None
    if choices is not None:
        choices = list(choices)
        if not values or set(values) - set(choices):
            raise error(f"{flag}: expected some of {','.join(choices)}, got {text!r}")
    if required and not values:
        raise error(f"{flag}: expected one or more {what}, got {text!r}")
    if low is not None and values and min(values) < low:
        raise error(f"{flag}: expected {what} >= {low:g}, got {text!r}")
    return values
