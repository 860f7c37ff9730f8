"""The in-flight limits (protocol/window.py): each covers a credit window's worth, and pruning forgets just the old."""
from collections import Counter

import pytest

from protocol import window


@pytest.mark.parametrize("credit_window", [1, 2, 8, 64])
def test_every_limit_covers_what_a_credit_window_lets_be_in_flight(credit_window):
    cache = window.in_flight(credit_window)
    assert cache == 4 * credit_window + 16   # the wire config's `cache`, as runs and checkpoints have always had it
    for limit in (window.id_span, window.backlog, window.horizon):
        assert limit(cache) >= 4 * credit_window, limit.__name__


def test_prune_forgets_the_entries_a_horizon_or_more_behind_the_newest_and_keeps_the_rest():
    partial = {b: {} for b in range(10)}
    window.prune(partial, newest=9, horizon=4)
    assert sorted(partial) == [6, 7, 8, 9]
    markers = Counter({3: 1, 4: 2, 5: 1})   # a Counter, as the parameter service keeps barrier markers
    window.prune(markers, newest=8, horizon=4)
    assert markers == Counter({5: 1})


def test_prune_reads_the_id_from_the_key_it_is_told_to():
    halves = {("forward", 1): "a", ("eval", 2): "b", ("forward", 5): "c"}
    window.prune(halves, newest=6, horizon=4, id_of=lambda key: key[1])
    assert halves == {("forward", 5): "c"}
    window.prune(halves, newest=6, horizon=1, id_of=lambda key: key[1])
    assert halves == {}
