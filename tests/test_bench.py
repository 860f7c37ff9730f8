"""`dni bench`: tiny real runs of each subcommand produce every JSON field, with sane values.

The autouse no_orphans fixture (conftest.py) asserts that no worker or echo process is left.
"""
import importlib.util
import json
import math

import pytest

from coordinator.cli import main
from workers.runtime.clock import CATEGORIES

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def sane(p: dict) -> None:
    assert p["n"] > 0 and 0 < p["p50"] <= p["p99"], p


def check_machine(m: dict) -> None:
    assert m["cpus"] >= 1 and m["pyzmq"] and m["libzmq"] and m["numpy"]
    assert m["blas"]["name"] and set(m["env"]) >= {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE"}
    assert m["env"]["OPENBLAS_NUM_THREADS"] == "1"  # pinned, so processes do not oversubscribe
    assert len(m["load_average"]) == 3


def check_targets(targets: list) -> None:
    assert targets
    for t in targets:
        assert set(t) == {"name", "value", "op", "limit", "pass"} and t["op"] in ("<=", ">=")
        # Microseconds added to raw pyzmq can be negative (ours was the faster that run); ratios cannot.
        assert math.isfinite(t["value"]) and ("added" in t["name"] or "learn" in t["name"] or t["value"] > 0), t
        assert t["pass"] == (t["value"] <= t["limit"] if t["op"] == "<=" else t["value"] >= t["limit"])


def plot_args(tmp_path) -> list[str]:
    return ["--plot", str(tmp_path / "b.png")] if HAS_MATPLOTLIB else []


def check_plot(tmp_path) -> None:
    if HAS_MATPLOTLIB:
        assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_latency_tiny_run_reports_every_figure(tmp_path, capsys):
    out = tmp_path / "latency.json"
    assert main(["bench", "latency", "--depths", "2,3", "--width", "16", "--batch", "8", "--steps", "40",
                 "--warmup", "5", "--repeats", "2", "--json", str(out), *plot_args(tmp_path)]) == 0
    r = json.loads(out.read_text())
    assert r["bench"] == "latency"
    check_machine(r["machine"])
    assert r["params"]["depths"] == [2, 3] and r["params"]["width"] == 16
    sane(r["isolated_stage1"]["update_ms"])
    sane(r["isolated_stage1"]["learn_ms"])
    assert sorted((x["mode"], x["depth"]) for x in r["runs"]) == [("backprop", 2), ("backprop", 3),
                                                                  ("dni", 2), ("dni", 3)]
    for run in r["runs"]:
        assert run["steps"] == 40 and run["samples_per_second"] > 0 and run["train_seconds"] > 0
        ln = run["learning"]   # every timed configuration says whether it learns
        assert ln["loss_start"] > 0 and ln["loss_end"] > 0 and 0 <= ln["held_out_accuracy"] <= 1
        assert ln["learns"] == (ln["loss_end"] <= 0.75 * ln["loss_start"]
                                and ln["held_out_accuracy"] >= 2 * ln["chance"])
        cpu = run["cpu_ms_per_batch"]
        assert cpu["workers"] > 0 and cpu["coordinator"] > 0 and cpu["arithmetic"] > 0 and cpu["messaging"] > 0
        assert cpu["arithmetic"] + cpu["messaging"] + cpu["threads"] == pytest.approx(cpu["workers"])
        assert run["page_faults_per_batch"] >= 0
        assert [s["stage"] for s in run["stages"]] == list(range(1, run["depth"] + 1))
        for s in run["stages"]:
            sane(s["latency_ms"])
            assert s["latency_ms"]["n"] == 35  # every batch after the warm-up, once
            seconds, frac = s["time_s"], s["time_fraction"]
            assert set(seconds) == {*CATEGORIES, "blocked", "total", "cpu", "main_cpu", "page_faults",
                                    "context_switches"}
            assert set(seconds["main_cpu"]) == set(CATEGORIES) and min(seconds["main_cpu"].values()) >= 0
            # the loop's own thread cannot use more CPU than the whole process, nor than its wall time
            assert sum(seconds["main_cpu"].values()) <= seconds["cpu"] + 1e-3
            assert seconds["main_cpu"]["compute"] <= seconds["compute"] + 1e-3
            assert set(frac) == {*CATEGORIES, "blocked"}
            assert all(v >= 0 for k, v in seconds.items() if k != "main_cpu") and seconds["total"] > 0
            assert sum(frac[c] for c in CATEGORIES) == pytest.approx(1.0)
            assert seconds["compute"] > 0 and seconds["send"] > 0 and seconds["receive"] > 0
            assert seconds["blocked"] <= seconds["wait"]
            if run["mode"] == "backprop":
                assert seconds["synth"] == 0
            elif s["stage"] < run["depth"]:
                assert seconds["synth"] > 0 and seconds["blocked"] == 0
        # locked backprop: every stage below the head waits for its gradient
        if run["mode"] == "backprop":
            assert all(s["time_s"]["blocked"] > 0 for s in run["stages"][:-1])
    assert [h["depth"] for h in r["headline"]] == [2, 3]
    for h in r["headline"]:
        assert 0 < h["dni_p50_ms"] <= h["dni_p99_ms"] and 0 < h["backprop_p50_ms"] <= h["backprop_p99_ms"]
        assert h["dni_samples_per_second"] > 0 and h["backprop_samples_per_second"] > 0
        assert h["ratio"] == pytest.approx(h["backprop_p50_ms"] / h["dni_p50_ms"])
    t = r["throughput"]
    assert t["depth"] == 3 and t["repeats"] == 2 and len(t["pairs"]) == 2
    for q in t["pairs"]:
        assert q["serial_samples_per_second"] > 0 and q["pipeline_samples_per_second"] > 0
        assert q["fraction_of_ideal"] == pytest.approx(q["pipeline_samples_per_second"]
                                                       / (2 * q["serial_samples_per_second"]))
    assert t["fraction_of_ideal"] in [q["fraction_of_ideal"] for q in t["pairs"]]   # the median pair's own
    assert t["ideal_samples_per_second"] == pytest.approx(2 * t["serial_samples_per_second"])
    assert t["fraction_of_ideal"] == pytest.approx(t["pipeline_samples_per_second"] / t["ideal_samples_per_second"])
    cpu = t["pipeline_cpu_ms_per_batch"]
    assert t["serial_cpu_ms_per_batch"] > 0 and cpu["workers"] > 0
    total = cpu["workers"] + cpu["coordinator"]
    assert t["cpu_bound_fraction"] == pytest.approx(t["serial_cpu_ms_per_batch"] / total)
    check_targets(r["targets"])
    printed = capsys.readouterr().out
    assert "stage-1 update latency p50" in printed and "2-core ideal" in printed and "OPENBLAS_NUM_THREADS=1" in printed
    check_plot(tmp_path)


def test_bench_transport_tiny_run_reports_every_figure(tmp_path, capsys):
    out = tmp_path / "transport.json"
    assert main(["bench", "transport", "--sizes", "4,128", "--round-trips", "40", "--stream", "40",
                 "--json", str(out), *plot_args(tmp_path)]) == 0
    r = json.loads(out.read_text())
    assert r["bench"] == "transport"
    check_machine(r["machine"])
    assert [t["transport"] for t in r["transports"]] == ["ipc", "tcp"]
    for t in r["transports"]:
        assert [s["kib"] for s in t["sizes"]] == [4, 128]
        for s in t["sizes"]:
            assert s["bytes"] == s["kib"] * 1024
            for path in ("project", "raw"):
                sane(s[path]["rtt_us"])
                sane(s[path]["one_way_us"])
                assert s[path]["one_way_us"]["p50"] < s[path]["rtt_us"]["p50"]
                assert s[path]["stream_msgs_per_s"] > 0
            o = s["overhead"]
            assert o["rtt_p50_us"] == pytest.approx(s["project"]["rtt_us"]["p50"] - s["raw"]["rtt_us"]["p50"])
            assert o["rtt_p50_ratio"] > 0 and o["rtt_p99_ratio"] > 0 and o["stream_ratio"] > 0
    check_targets(r["targets"])
    assert "stream ours/raw" in capsys.readouterr().out
    check_plot(tmp_path)


@pytest.mark.skipif(HAS_MATPLOTLIB, reason="checks the message shown without the plot extra")
def test_plot_without_matplotlib_is_a_one_line_error(tmp_path, capsys):
    assert main(["bench", "transport", "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "dni: error: plotting needs matplotlib: pip install -e .[plot]"


@pytest.mark.parametrize("argv", [["latency", "--depths", "1,2"], ["latency", "--depths", "2,x"],
                                  ["latency", "--steps", "5", "--warmup", "5"], ["latency", "--repeats", "0"],
                                  ["transport", "--transports", "udp"]])
def test_bad_bench_options_give_one_line_errors(argv, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dni: error:") and "\n" not in err
