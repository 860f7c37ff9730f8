"""`dni bench stall`: one stage stalled partway through a job, the update rates and accuracy around it.

The autouse no_orphans fixture (conftest.py) asserts that no worker is left behind.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from timing import SCHEDULING_MARGIN_S, wait_until

from coordinator.bench import procfs, stall
from coordinator.cli import main, parser
from coordinator.config import Config
from protocol import liveness

# Long enough that the stall falls in the middle of training, with a stall's length of it on each side, and in
# the middle of an epoch (whose end is a barrier, at batch 896), 32 batches before an evaluation is due (864).
SMALL = ["--stages", "4", "--width", "16", "--train-subset", "2048", "--batch", "16", "--epochs", "13",
         "--eval-every", "48", "--seconds", "1", "--heartbeat", "1"]


@pytest.mark.parametrize("argv, words", [
    (["--stage", "5"], "--stage 5: out of range, the stages are 1..4"),
    (["--stage", "0"], "--stage 0: out of range, the stages are 1..4"),
    (["--seconds", "-1"], "--seconds -1: a stall lasts more than 0 seconds"),
    (["--seconds", "13"], "--seconds 13: a worker stopped that long would be declared dead (liveness bound 3 x "
                          "--heartbeat 6 s): at most 12 s, or a longer --heartbeat"),
    (["--at", "1"], "--at 1: a fraction of the batches, above 0 and below 1"),
    (["--share", "0"], "--share 0: a share of one core, above 0 and at most 1"),
    (["--rows", "dni,nope"], "--rows: expected some of"),
])
def test_bad_input_is_refused_in_one_line_before_any_job(argv, words, capsys):
    assert main(["bench", "stall", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err


def test_the_longest_stall_with_sigstop_is_an_interval_short_of_the_liveness_bound():
    # A worker may have been silent for an interval when it is stopped: MISSED_HEARTBEATS - 1 intervals are safe.
    longest = (liveness.MISSED_HEARTBEATS - 1) * 6
    args = parser().parse_args(["bench", "stall", "--seconds", str(longest), "--heartbeat", "6"])
    assert stall.params(args)["seconds"] == longest
    args = parser().parse_args(["bench", "stall", "--seconds", str(longest + 0.1), "--heartbeat", "6"])
    with pytest.raises(ValueError, match="would be declared dead"):
        stall.params(args)
    args = parser().parse_args(["bench", "stall", "--seconds", "60", "--how", "quota"])   # slowed, not silent
    assert stall.params(args)["seconds"] == 60


@pytest.mark.slow
def test_a_small_stall_bench_writes_every_figure_and_leaves_nothing_behind(tmp_path):
    argv = [sys.executable, "-m", "coordinator", "bench", "stall", *SMALL, "--rows", "dni,cdni-synthetic-inputs",
            "--json", str(tmp_path / "stall.json")]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((tmp_path / "stall.json").read_text())
    assert result["bench"] == "stall" and result["params"]["stage"] == 2
    assert result["failed"] == [] and result["refused"] == []
    runs = {(r["row"], r["run"]): r for r in result["runs"]}
    free, hit = runs["dni", "unstalled"], runs["dni", "stalled"]
    total = result["params"]["total_steps"]
    assert total == 128 * 13 and free["stall"]["at_step"] == hit["stall"]["at_step"] == total // 2
    for r in (free, hit):
        assert r["steps"] == total and r["updates"] == {str(k): total for k in range(1, 5)}
        assert 0.1 < r["test_accuracy"] <= 1 and r["validation"] and r["samples_per_second"] > 0
        assert 1 <= r["stall"]["end"] < 1 + SCHEDULING_MARGIN_S
        for k in "1234":
            assert r["rates"][k]["before"] > 0 and r["rates"][k]["after"] > 0, (r["run"], k, r["rates"][k])
            assert len(r["series"]["rate"][k]) == len(r["series"]["time"])
    assert hit["stall"]["how"] == "sigstop" and free["stall"]["how"] == "none"
    # Unstalled, every stage updates through the window; stalled, stage 2 makes no update at all, and the
    # others no more than the credit lets through (--window batches past the head).
    window = Config.window
    assert all(free["updates_during"][k] > 0 for k in "1234"), free["updates_during"]
    assert hit["updates_during"]["2"] == 0 and hit["rates"]["2"]["during"] == 0
    assert all(hit["updates_during"][k] <= window for k in "134"), hit["updates_during"]
    # Every evaluation is placed on the time line; some fall before the stall, some after it.
    times = [v["time"] for v in hit["validation"]]
    assert times == sorted(times) and times[0] < 0 < hit["stall"]["end"] < times[-1]
    row, unlocked = result["compare"]
    assert row["row"] == "dni" and row["kept_during"]["2"] == 0 and set(row["above"]) == {"3", "4"}
    assert row["test_delta_pp"] == pytest.approx(100 * (hit["test_accuracy"] - free["test_accuracy"]))
    # With synthetic inputs, the stages above the stall go on updating from inputs fed ahead of it, past the
    # evaluation due in it (which waits for the chain) and past the epoch's end (no barrier in a stall either);
    # stage 2 still makes none. Every batch updates each stage once from its real input, and once more through I
    # if it was fed ahead (--ahead-update again); stage 2 took those fed ahead of its own stop up late, behind
    # each other, and waited for their real input instead.
    hit = runs["cdni-synthetic-inputs", "stalled"]
    assert unlocked["row"] == "cdni-synthetic-inputs" and hit["updates_during"]["2"] == 0
    assert all(hit["updates_during"][k] > 896 - total // 2 for k in "34"), hit["updates_during"]
    through_i = {k: hit["unlock"][k]["synthetic_updates"] for k in "234"}
    assert hit["steps"] == total and hit["updates"] == {"1": total, **{k: total + through_i[k] for k in "234"}}
    assert hit["unlock"]["2"]["ahead_late"] > through_i["2"] and free["unlock"] == {}, hit["unlock"]


@pytest.mark.slow
def test_ctrl_c_mid_stall_continues_the_stopped_worker_and_stops_every_process(tmp_path):
    keep = tmp_path / "runs"
    # The longest stall a 2 s heartbeat allows, early in the job: on an idle machine the rest of it would
    # otherwise be over before the test has seen the stopped worker and sent its Ctrl-C.
    argv = [sys.executable, "-m", "coordinator", "bench", "stall", *SMALL, "--heartbeat", "2", "--seconds", "3.9",
            "--at", "0.2", "--rows", "dni", "--keep", str(keep)]
    bench = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stopped_worker() -> int | None:
        for coordinator in Path(f"/proc/{bench.pid}/task/{bench.pid}/children").read_text().split():
            for pid in procfs.workers(int(coordinator)).values():
                if procfs.state(pid) == "T":
                    return pid
        return None

    wait_until(lambda: (keep / "dni-stalled").is_dir() and stopped_worker(), 300, "the stalled worker", bench)
    worker = stopped_worker()
    bench.send_signal(signal.SIGINT)
    out, err = bench.communicate(timeout=liveness.STOP_TIMEOUT_S + liveness.REAP_TIMEOUT_S + SCHEDULING_MARGIN_S)
    assert bench.returncode == 130, out + err
    assert "dni bench stall: interrupted; a stalled worker was continued first, and every job stopped" in err
    assert not os.path.exists(f"/proc/{worker}") or procfs.state(worker) == "Z"


@pytest.mark.slow
@pytest.mark.skipif(bool(stall.quota_refusal(0.05)), reason="a CPU quota needs root and a cgroup cpu controller")
def test_a_stage_slowed_by_a_cpu_quota_is_throttled_and_its_group_removed(tmp_path):
    argv = [sys.executable, "-m", "coordinator", "bench", "stall", *SMALL, "--how", "quota", "--share", "0.05",
            "--rows", "dni", "--json", str(tmp_path / "stall.json")]
    bench = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = bench.communicate(timeout=600)
    assert bench.returncode == 0, out + err
    result = json.loads((tmp_path / "stall.json").read_text())
    hit = next(r for r in result["runs"] if r["run"] == "stalled")["stall"]
    # 5% of a core: the kernel's smallest quota (1 ms) in a period of 20 ms, and the stage held back under it.
    assert hit["how"] == "quota" and hit["share"] == 0.05 and hit["period_us"] == 20_000
    assert hit["throttled_periods"] > 0 and hit["throttled_ms"] > 0, hit
    groups = [p for root in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup") if os.path.isdir(root)
              for p in os.listdir(root) if p == f"dni-bench-stall-{bench.pid}"]
    assert groups == []
