"""GPipe's micro-batches: how a batch is split, the ids its parts travel under, and where an id belongs."""
from __future__ import annotations


def split(n: int, m: int) -> list[slice]:
    """The m micro-batches of an n-example batch, in order; sizes differ by one at most, the larger
    first (an epoch's last batch may be short of --batch-size). ValueError if n < m."""
    if not 1 <= m <= n:
        raise ValueError(f"{n} examples cannot make {m} micro-batches")
    size, extra = divmod(n, m)
    bounds = [j * size + min(j, extra) for j in range(m + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def ids(step: int, m: int) -> range:
    """The wire ids of training batch `step`'s micro-batches: consecutive over the run, as every stream's are."""
    return range(step * m, (step + 1) * m)


def locate(b: int, m: int) -> tuple[int, int]:
    """(the training batch, the micro-batch's place in it) of wire id b."""
    return divmod(b, m)
