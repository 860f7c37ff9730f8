"""The network bench's projection model: which costs each figure is made of, against exact expected values."""
import pytest

from coordinator.bench.netlab.projection import extend, message_ms, messages, project


def stage(compute, threads, synth=0.0, send=0.1, receive=0.1, loop=0.05) -> dict:
    costs = {"compute": compute, "synth": synth, "send": send, "receive": receive, "loop": loop, "threads": threads}
    return {**costs, "total": sum(costs.values())}


FIRST, HEAD = stage(0.3, 0.3, synth=0.5), stage(0.4, 0.2)


def test_each_stage_carries_its_data_messages():
    assert [messages(4, i) for i in range(4)] == [3, 4, 4, 2]
    assert [messages(2, i) for i in range(2)] == [3, 2]
    assert message_ms([FIRST, HEAD], 0) == pytest.approx(0.1) and message_ms([FIRST, HEAD], 1) == pytest.approx(0.1)


def test_dni_latency_is_stage_1s_own_work_and_the_encryption_of_what_it_sends_whatever_the_link():
    for link in (0.07, 20.0):
        got = project([FIRST, HEAD], 0.2, link, "dni", 2, 128)
        assert got["stage1_latency_ms"] == pytest.approx(0.3 + 0.1 + 0.1)


def test_backprop_latency_is_every_stage_but_stage_1s_input_and_two_crossings_per_boundary():
    for k, link in ((2, 0.07), (2, 5.0), (4, 5.0)):
        stages = extend([FIRST, HEAD], k)
        got = project(stages, 0.2, link, "backprop", 2, 128)
        path = sum(s["total"] for s in stages) - 0.1
        assert got["stage1_latency_ms"] == pytest.approx(path + 2 * (k - 1) * link)
        assert got["bound"] == "locked round trip"
        assert got["samples_per_second"] == pytest.approx(128e3 / got["stage1_latency_ms"])


def test_dni_runs_at_the_slower_of_its_slowest_host_and_its_credits_round_the_cycle():
    near = project([FIRST, HEAD], 0.2, 0.07, "dni", 8, 128)
    assert near["bound"] == "slowest host" and near["period_ms"]["slowest host"] == pytest.approx(FIRST["total"])
    far = project([FIRST, HEAD], 0.2, 20.0, "dni", 2, 128)
    cycle = (3 * 20.0 + FIRST["total"] + HEAD["total"] + 0.2) / 2
    assert far["bound"] == "credit window" and far["samples_per_second"] == pytest.approx(128e3 / cycle)


def test_gpipe_adds_the_slowest_stages_micro_batches_to_the_round_trip_and_waits_for_the_flush():
    for m, link in ((1, 0.07), (4, 0.07), (4, 20.0)):
        got = project([FIRST, HEAD], 0.2, link, "gpipe", 2, 128, micro_batches=m)
        every, slowest = FIRST["total"] + HEAD["total"], max(FIRST["total"], HEAD["total"])
        latency = (every + (m - 1) * slowest - 0.1) / m + 2 * link
        assert got["stage1_latency_ms"] == pytest.approx(latency)
        assert got["bound"] == "flush"
        assert got["samples_per_second"] == pytest.approx(128e3 / (latency + 2 * link + 0.2))
    # one micro-batch is backprop's round trip
    assert project([FIRST, HEAD], 0.2, 5.0, "gpipe", 2, 128)["stage1_latency_ms"] == \
        pytest.approx(project([FIRST, HEAD], 0.2, 5.0, "backprop", 2, 128)["stage1_latency_ms"])


def test_pipedream_shares_the_round_trip_among_k_batches_and_its_update_waits_for_them():
    stages = extend([FIRST, HEAD], 4)
    every = sum(s["total"] for s in stages)
    far = project(stages, 0.2, 20.0, "pipedream", 2, 128)
    trip = every + 6 * 20.0
    # the coordinator's credit is at least K = 4: its cycle of 5 crossings / 4 is shorter than the 1F1B limit
    assert far["bound"] == "1F1B limit" and far["samples_per_second"] == pytest.approx(128e3 * 4 / trip)
    assert far["stage1_latency_ms"] == pytest.approx(trip)
    near = project(stages, 0.2, 0.07, "pipedream", 8, 128)
    assert near["bound"] == "slowest host"
    assert near["stage1_latency_ms"] == pytest.approx(8 * FIRST["total"])
    link = project(stages, 0.2, 20.0, "pipedream", 1, 128, credit="link")
    assert link["bound"] == "credit window"
    assert link["period_ms"]["credit window"] == pytest.approx(40.0 + 0.2 + FIRST["total"])
