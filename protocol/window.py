"""The in-flight limits a credit window implies, each named once: what a stage keeps, admits, defers and forgets.

The coordinator sizes the in-flight cache from --window and sends it as the wire config's `cache`;
a worker derives every other limit from that cache, the one number it is told.
"""
from __future__ import annotations

from typing import Callable, Hashable

# Credit bounds the batches in flight to a window (per link, with link credit), yet a target may
# come back later than a window: each link of a deep pipeline holds its own window, and messages
# on different connections overtake each other. A few windows, and room to spare for the small
# windows (1, 2) the defaults use, cover that; a target later still finds its batch evicted, counted.
WINDOWS = 4
SLACK = 16


def in_flight(window: int) -> int:
    """Batches a stage keeps awaiting their targets (the wire config's `cache`), for a credit window."""
    return WINDOWS * window + SLACK


def id_span(cache: int) -> int:
    """How far from its stream's mark an id may lie and be admitted.

    Credit keeps every honest stream within the cache of its mark: an id further away is one no
    sender of the run could have sent, and taking it would let forged ids walk the mark away.
    """
    return cache


def backlog(cache: int) -> int:
    """Forward messages a held stage defers: credit lets at most a window arrive while it waits;
    beyond the cache it is someone else's flood, and dropped."""
    return cache


def horizon(cache: int) -> int:
    """How far behind the newest id a half-finished entry is forgotten (a partial sum, a barrier's
    markers, half of a time box's input): its missing part would have come within a cache, as a
    target does; one older was lost, or forged, and must not pile up."""
    return cache


def prune(entries: dict, newest: int, horizon: int, id_of: Callable[[Hashable], int] = lambda key: key) -> None:
    """Forget the entries whose id (id_of(key)) is `horizon` or more behind `newest`."""
    for key in [key for key in entries if id_of(key) <= newest - horizon]:
        del entries[key]
