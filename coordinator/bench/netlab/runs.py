"""The jobs of `dni bench network` (dni, cdni, backprop against delay, bandwidth, a slow host) and their figures."""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from coordinator.bench import report
from coordinator.bench.netlab import job, printout, projection, shaping
from coordinator.bench.netlab.hosts import available
from coordinator.bench.netlab.job import Setting
from protocol.keys import generate

MODES = ("dni", "cdni", "backprop", "gpipe", "pipedream")
PROJECTED_STAGES = (2, 3, 4, 8)


def refusal() -> str | None:
    """Why this machine cannot run the bench, in one line; None if it can."""
    if os.geteuid() != 0:
        return "dni bench network needs root: it makes a network namespace, veth pair, qdisc and cgroup per host"
    ok, why = available()
    return None if ok else f"dni bench network cannot make network namespaces: {why}"


def settings(p: dict) -> list[Setting]:
    """Every job of the sweep, in the order run, each credit scheme's right after the other's; each setting once."""
    focus, delays, w, big = p["focus_stages"], p["delays"], p["window"], p["throughput_window"]
    # At 2 stages only what the projection's check needs.
    out = [Setting(m, k, d, w) for k in p["stages"] for m in p["modes"] for d in delays
           if k > 2 or m in ("dni", "backprop") or k == focus]
    if "dni" in p["modes"]:
        out += [Setting("dni", k, d, big) for k in p["stages"] for d in delays]
        out += [Setting("dni", focus, d, win, coordinator_delayed=False) for d in delays if d for win in (w, big)]
    out += [Setting(m, focus, d, win) for m in ("cdni", "dni") if m in p["modes"] for d in p["window_delays"]
            for win in p["windows"]]
    if p["slow_stage"]:
        out += [Setting(m, focus, 0.0, w, slow_stage=p["slow_stage"], slow_share=p["slow_share"])
                for m in p["modes"] if m != "cdni"]
    if p["bandwidth"]:
        out += [Setting(m, focus, d, w, bandwidth=p["bandwidth"]) for m in p["modes"]
                for d in sorted({0.0, max(delays)})]
    return list(dict.fromkeys(replace(s, credit=c) for s in out for c in p["credits"]))


def find(runs: list[dict], **want) -> dict | None:
    base = {"bandwidth": None, "slow_stage": 0, "coordinator_delayed": True}
    return next((r for r in runs if all(r[k] == v for k, v in {**base, **want}.items())), None)


def validate(runs: list[dict], p: dict) -> list[dict]:
    """The model against this machine at 2 stages, every process (relays too) sharing its cores."""
    out = []
    for mode, credit, d in [(m, c, d) for m in ("dni", "backprop") for c in p["credits"] for d in p["delays"]]:
        r = find(runs, mode=mode, stages=2, delay_ms=d, window=p["window"], credit=credit)
        if r is None or not r["sched_ms_per_batch"]:
            continue
        # The latency is a median: the costs as they are; samples/s a mean: with the waits for a core.
        lat = projection.project(*costs(r), link(r), mode, r["window"], p["batch"], credit=credit)
        rate = projection.project(*costs(r, waits=True), link(r), mode, r["window"], p["batch"], credit=credit)
        out.append({"mode": mode, "credit": credit, "delay_ms": d, "window": r["window"], "bound": rate["bound"],
                    "stretch": {n: 1 + v["path_waited"] / v["ran"] for n, v in r["sched_ms_per_batch"].items()
                                if not n.startswith("relay")},
                    "other_cores": r["other_cores"],
                    "samples_per_second": {"projected": rate["samples_per_second"],
                                           "measured": r["samples_per_second"]},
                    "stage1_p50_ms": {"projected": lat["stage1_latency_ms"],
                                      "measured": r["stage1_latency_ms"]["p50"]}})
    return out


def costs(r: dict, waits: bool = False) -> tuple[list[dict], float]:
    """The stages' costs per batch and the coordinator's, over training: each worker's own breakdown
    (which spans its whole life: start-up, evaluations, shutdown) scaled to the CPU the kernel counted
    over training; with `waits`, as wall time on this machine: the waits for a core of each process's
    threads that a message goes through added (see `job.sched_ms`)."""
    sched, out = r["sched_ms_per_batch"], []
    for i, stage in enumerate(r["cpu_ms_per_batch"]["stages"], 1):
        t = sched[f"stage{i}"]
        scale = (t["ran"] + (t["path_waited"] if waits else 0)) / stage["total"]
        out.append({part: ms * scale for part, ms in stage.items()})
    c = sched["coordinator"]
    return out, c["ran"] + (c["path_waited"] if waits else 0)


def link(r: dict) -> float:
    """One crossing: half the mean round trip of a batch-sized message over the job's links."""
    return sum(x["rtt_message_ms"]["p50"] for x in r["links"]) / len(r["links"]) / 2


def project_hosts(runs: list[dict], p: dict) -> list[dict]:
    """K stages on K hosts (no sharing, no relay), each delay: costs measured at that delay, deepest run."""
    out = []
    for d, credit in [(d, c) for d in p["delays"] for c in p["credits"]]:
        for mode, window in dict.fromkeys([(m, p["window"]) for m in p["modes"]] + [("dni", p["throughput_window"])]):
            measured = [r for r in runs if r["mode"] == mode and r["delay_ms"] == d and r["window"] == window
                        and find([r], mode=mode, delay_ms=d, window=window, credit=credit)
                        and r["sched_ms_per_batch"]]
            if not measured:
                continue
            r = max(measured, key=lambda r: r["stages"])
            stages, coordinator = costs(r)
            for k in PROJECTED_STAGES:
                proj = projection.project(projection.extend(stages, k), coordinator, link(r), mode, window,
                                          p["batch"], credit=credit, micro_batches=p["micro_batches"])
                out.append({"mode": mode, "credit": credit, "window": window, "delay_ms": d, "stages": k,
                            "from_stages": r["stages"],
                            **{key: proj[key] for key in ("samples_per_second", "stage1_latency_ms", "bound")}})
    return out


def hop_cost(runs: list[dict], p: dict) -> list[dict]:
    """What the coordinator's two crossings a batch cost: the same job with its links undelayed."""
    out = []
    for d, credit in [(d, c) for d in p["delays"] for c in p["credits"]]:
        for w in dict.fromkeys((p["window"], p["throughput_window"])):
            a = find(runs, mode="dni", stages=p["focus_stages"], delay_ms=d, window=w, credit=credit)
            b = find(runs, mode="dni", stages=p["focus_stages"], delay_ms=d, window=w, coordinator_delayed=False,
                     credit=credit)
            if a and b:
                out.append({"delay_ms": d, "credit": credit, "window": w,
                            "samples_per_second": {"through": a["samples_per_second"],
                                                   "undelayed": b["samples_per_second"]},
                            "stage1_p50_ms": {"through": a["stage1_latency_ms"]["p50"],
                                              "undelayed": b["stage1_latency_ms"]["p50"]},
                            "throughput_lost": 1 - a["samples_per_second"] / b["samples_per_second"]})
    return out


def accuracy(runs: list[dict], p: dict) -> list[dict]:
    return [{"mode": r["mode"], "credit": r["credit"], "delay_ms": r["delay_ms"], "window": r["window"],
             "test_accuracy": r["test_accuracy"],
             "staleness_mean": r["staleness"]["all"]["mean"], "samples_per_second": r["samples_per_second"]}
            for r in runs if r["mode"] != "backprop" and r["stages"] == p["focus_stages"]
            and find([r], mode=r["mode"], delay_ms=r["delay_ms"], window=r["window"])]


def credit_table(runs: list[dict], p: dict) -> list[dict]:
    """Link against coordinator credit, side by side: each setting at the focus depth that ran with both."""
    out = []
    for r in runs if len(p["credits"]) > 1 else []:
        if r["stages"] != p["focus_stages"] or r["credit"] != p["credits"][0] or r["slow_stage"] \
                or not r["coordinator_delayed"]:
            continue
        key = {k: r[k] for k in ("mode", "window", "delay_ms", "bandwidth")}
        by = {c: find(runs, stages=p["focus_stages"], credit=c, **key) for c in p["credits"]}
        if all(by.values()):
            out.append({**key, **{c: {"samples_per_second": x["samples_per_second"],
                                      "stage1_p50_ms": x["stage1_latency_ms"]["p50"],
                                      "stage1_p99_ms": x["stage1_latency_ms"]["p99"],
                                      "staleness_mean": x["staleness"]["all"]["mean"],
                                      "staleness_p99": x["staleness"]["all"]["p99"],
                                      "test_accuracy": x["test_accuracy"]} for c, x in by.items()}})
    return out


def targets(result: dict) -> list[dict]:
    p, out = result["params"], []
    runs = [r for r in result["runs"] if r["credit"] == p["credits"][0]]
    hi = max(p["delays"])
    for k in p["stages"]:
        if k < 3 or not hi:
            continue
        lat = {(m, d): find(runs, mode=m, stages=k, delay_ms=d, window=p["window"]) for m in ("dni", "backprop")
               for d in (0.0, hi)}
        if all(lat.values()):
            p50 = {key: r["stage1_latency_ms"]["p50"] for key, r in lat.items()}
            out += [report.target(f"dni stage-1 p50 at {hi:g} ms / at 0 ms, {k} stages",
                                  p50[("dni", hi)] / p50[("dni", 0.0)], "<=", 1.5),
                    report.target(f"backprop stage-1 p50 growth 0 -> {hi:g} ms, {k} stages, in units of 2(K-1)*delay",
                                  (p50[("backprop", hi)] - p50[("backprop", 0.0)]) / (2 * (k - 1) * hi), ">=", 1.0)]
        fast = find(runs, mode="dni", stages=k, delay_ms=hi, window=p["throughput_window"])
        if fast and lat[("backprop", hi)]:
            name = f"dni (window {p['throughput_window']}) / backprop samples/s at {hi:g} ms, {k} stages"
            ratio = fast["samples_per_second"] / lat[("backprop", hi)]["samples_per_second"]
            out.append(report.target(name, ratio, ">=", 5.0))
    focus = {"stages": p["focus_stages"], "delay_ms": 0.0, "window": p["window"]}
    for m in ("dni", "backprop"):
        slow = find(runs, mode=m, slow_stage=p["slow_stage"], **focus)
        free = find(runs, mode=m, **focus)
        if p["slow_stage"] and slow and free:
            ratio = slow["stage1_latency_ms"]["p50"] / free["stage1_latency_ms"]["p50"]
            name = f"{m} stage-1 p50, stage {p['slow_stage']} at {p['slow_share']:g} core / unthrottled"
            out.append(report.target(name, ratio, "<=" if m == "dni" else ">=", 1.5 if m == "dni" else 1.0))
    for v in result["projection"]["validation"]:
        for what in ("samples_per_second", "stage1_p50_ms"):
            err = v[what]["projected"] / v[what]["measured"] - 1
            credit = f" ({v['credit']} credit)" if v["credit"] != p["credits"][0] else ""
            out.append(report.target(f"projection error, {what}, {v['mode']}{credit} at 2 stages, {v['delay_ms']:g} ms",
                                     abs(err), "<=", 0.2))
    return out


def cdni_windows(result: dict) -> dict:
    """Which windows keep cdni within 0.5 pp of its 0 ms accuracy (at the base window), per delay."""
    p, acc = result["params"], result["accuracy"]
    acc = [a for a in acc if a["credit"] == p["credits"][0]]
    base = next((a["test_accuracy"] for a in acc if a["mode"] == "cdni" and a["delay_ms"] == 0
                 and a["window"] == p["window"]), None)
    if base is None:
        return {}
    return {f"{d:g}": sorted(a["window"] for a in acc if a["mode"] == "cdni" and a["delay_ms"] == d
                             and a["test_accuracy"] >= base - 0.005) for d in p["delays"] if d}


def run(p: dict) -> dict:
    has_netem, said = shaping.netem()
    result = {"bench": "network", "machine": report.machine(), "params": p,
              "delay_by": "netem" if has_netem else "relay", "netem": {"available": has_netem, "tc_said": said}}
    print(report.describe(result["machine"]))
    by = "netem" if has_netem else f"a TCP relay in front of every host (no netem: tc said {said!r})"
    print(f"link delay by {by}")
    with tempfile.TemporaryDirectory(prefix="dni-bench-net-") as tmp:
        keys = None if p["insecure"] else generate(Path(tmp) / "keys", workers=max(p["stages"]))
        runs, failed = sweep(settings(p), p, keys, Path(tmp), has_netem)
    result["runs"], result["failed"] = runs, failed
    result["projection"] = {"validation": validate(runs, p), "hosts": project_hosts(runs, p)}
    result["hop"] = hop_cost(runs, p)
    result["accuracy"] = accuracy(runs, p)
    result["credit"] = credit_table(runs, p)
    result["cdni_windows_within_half_point"] = cdni_windows(result)
    result["targets"] = targets(result)
    printout.summary(result)
    return result


def sweep(todo: list[Setting], p: dict, keys: Path | None, tmp: Path, has_netem: bool) -> tuple[list, list]:
    """Run every job; one that fails is recorded with its cause and its logs kept, and the sweep goes on."""
    runs, failed, kept = [], [], None
    for i, s in enumerate(todo, 1):
        out = Path(p["runs_dir"] or tmp) / s.tag()
        try:
            runs.append(job.run(s, p, keys, out, has_netem))
        # Any error of one job (a process that exits, a missing figure, a timeout) is that job's:
        # the hosts are gone by now (hosts() removes them however its body ends), so the next job
        # starts clean. Ctrl-C is not an Exception and still ends the sweep.
        except Exception as exc:
            if not p["runs_dir"]:   # the temporary directory goes with the sweep: the logs move out of it
                kept = kept or Path(tempfile.mkdtemp(prefix="dni-bench-net-failed-"))
                for x in files(out):
                    shutil.move(x, kept / x.name)
                out = kept / out.name
            failed.append({**asdict(s), "failed": f"{type(exc).__name__}: {exc}",
                           "logs": [str(x) for x in files(out)]})
            printout.failure(i, len(todo), failed[-1])
            continue
        printout.run(i, len(todo), runs[-1])
    return runs, failed


def files(out: Path) -> list[Path]:
    """A job's run directory and its logs (`out`, `out.*.log`), those that exist."""
    return [x for x in (out, *sorted(out.parent.glob(f"{glob.escape(out.name)}.*.log"))) if x.exists()]
