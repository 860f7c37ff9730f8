"""`dni bench latency`: update latency, samples/s and where time goes, dni against backprop, by depth."""
from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from coordinator import plans
from coordinator.bench import report, stagememory
from coordinator.config import Config
from coordinator.data import Dataset, batches, generated_task, load_mnist
from coordinator.job import serve
from coordinator.metrics import percentiles
from workers.numerics.reference import build_network, step
from workers.numerics.stage import Stage, train_step
from workers.runtime.clock import CATEGORIES

MODES = ("dni", "backprop")


def config(mode: str, depth: int, p: dict, out: Path) -> Config:
    """depth - 1 hidden stages of p["width"]; with p["conv"], its conv stages and one dense stage."""
    # One epoch over exactly `steps` batches, one evaluation batch, no intermediate checkpoint:
    # the run is the training it measures.
    hidden = ",".join([str(p["width"])] * (1 if p["conv"] else depth - 1))
    return Config(hidden=hidden, conv=p["conv"], data=p["data"], mode=mode, epochs=1, batch_size=p["batch"],
                  eval_batch=p["batch"], window=p["window"], seed=p["seed"], out=str(out), checkpoint_every=0,
                  progress=False).validate()


def task(p: dict) -> Dataset:
    """The generated task with `width` input features, so every hidden stage does the same work; with conv
    stages, MNIST's first training images and its first test images, centred as `dni run` centres them."""
    if p["conv"]:
        data = load_mnist(p["data"]).first(p["steps"] * p["batch"])
        return replace(data, x_test=data.x_test[:HELD_OUT], y_test=data.y_test[:HELD_OUT]).centred()
    return generated_task(seed=p["seed"], n_train=p["steps"] * p["batch"], n_test=HELD_OUT, n_features=p["width"])


HELD_OUT = 2000          # held-out examples each timed configuration is scored on
LEARNS = {"loss_ratio": 0.75, "accuracy_over_chance": 2.0}   # both must hold, or the run is flagged


def learning(run_dir: Path, depth: int, summary: dict, n_classes: int, k: int = 20) -> dict:
    """Training loss over the first and last k batches (the head's), held-out accuracy, and whether it learnt."""
    losses = []
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            if rec["stage"] == depth and "loss" in rec:
                losses.append((rec["step"], rec["loss"]))
    losses = [v for _, v in sorted(losses)]
    start, end = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
    acc = summary["test_accuracy"]
    learns = bool(end <= LEARNS["loss_ratio"] * start and acc >= LEARNS["accuracy_over_chance"] / n_classes)
    return {"loss_start": start, "loss_end": end, "held_out_accuracy": acc, "chance": 1 / n_classes, "learns": learns}


def stage_latencies(run_dir: Path, warmup: int) -> dict[int, list[float]]:
    out = defaultdict(list)
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            if "latency_ms" in rec and rec["step"] >= warmup:
                out[rec["stage"]].append(rec["latency_ms"])
    return out


def staleness(run_dir: Path, warmup: int) -> dict:
    """The staleness of the targets every stage (and stage 1) fitted its synthesizer to, after `warmup` steps."""
    every, first = [], []
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            if "staleness" in rec and rec["step"] >= warmup:
                every.append(rec["staleness"])
                if rec["stage"] == 1:
                    first.append(rec["staleness"])
    return {"all": {"mean": float(np.mean(every)) if every else None, **percentiles(every)},
            "stage1": {"mean": float(np.mean(first)) if first else None, **percentiles(first)}}


MESSAGING = ("send", "receive", "wait", "idle", "other")   # the loop's own CPU that is not arithmetic


def pipeline(mode: str, depth: int, data: Dataset, p: dict, tmp: Path, tag: str = "") -> dict:
    """One real `dni run`-style job: coordinator here, one spawned `dni worker` per stage."""
    out = tmp / f"{mode}-{depth}{tag}"
    cfg = config(mode, depth, p, out)
    cpu = time.process_time()
    summary = serve(plans.for_config(cfg, data), f"ipc://{tmp}/control-{mode}-{depth}{tag}", spawn_local=True)
    cpu = time.process_time() - cpu
    latencies = stage_latencies(out, p["warmup"])
    stages = []
    for k in range(1, depth + 1):
        seconds = summary["workers"][str(k)]["time_s"]
        total = seconds["total"]
        stages.append({"stage": k, "latency_ms": percentiles(latencies[k]), "time_s": seconds,
                       "time_fraction": {c: seconds[c] / total for c in (*CATEGORIES, "blocked")},
                       **{f: summary["workers"][str(k)].get(f) for f in ("peak_rss_mb", "start_rss_mb", "held_peak")}})
    # CPU the whole run cost the machine (workers and coordinator, every thread), per batch:
    # unlike wall time, hardly moved by whatever else runs on the machine. Split by what it
    # paid for: the stages' arithmetic, their loops' messaging, and the helper threads
    # (ZeroMQ's I/O thread, pyzmq's zero-copy garbage collector) that carry the messages.
    per_batch = 1e3 / summary["steps"]
    arithmetic = sum(s["time_s"]["main_cpu"][c] for s in stages for c in ("compute", "synth"))
    messaging = sum(s["time_s"]["main_cpu"][c] for s in stages for c in MESSAGING)
    worker_cpu = sum(s["time_s"]["cpu"] for s in stages)
    return {"mode": mode, "depth": depth, "steps": summary["steps"], "train_seconds": summary["train_seconds"],
            "samples_per_second": summary["samples_per_second"],
            "cpu_ms_per_batch": {"workers": worker_cpu * per_batch, "coordinator": cpu * per_batch,
                                 "arithmetic": arithmetic * per_batch, "messaging": messaging * per_batch,
                                 "threads": (worker_cpu - arithmetic - messaging) * per_batch},
            "page_faults_per_batch": sum(s["time_s"]["page_faults"] for s in stages) / summary["steps"],
            "learning": learning(out, depth, summary, data.n_classes), "stages": stages}


def isolated_stage1(data: Dataset, p: dict, n: int = 200) -> dict:
    """Stage 1's dni work for one batch in this process alone: forward, synthetic gradient, update
    (what its update latency covers), and the synthesizer's training apart."""
    cfg = plans.for_config(config("dni", 2, p, Path(".")), data).wire
    stage = Stage(1, cfg.sizes[0], cfg.sizes[1], cfg)
    rng = np.random.default_rng(p["seed"])
    target = (rng.standard_normal((p["batch"], cfg.sizes[1])) * 1e-3).astype(np.float32)
    update, learn = [], []
    for b, (x, y) in zip(range(n + p["warmup"]), batches(data.x_train, data.y_train, p["batch"], rng)):
        t0 = time.perf_counter()
        train_step(stage, b, x, y)
        t1 = time.perf_counter()
        stage.inflight.fit(b, target)
        t2 = time.perf_counter()
        if b >= p["warmup"]:
            update.append((t1 - t0) * 1e3)
            learn.append((t2 - t1) * 1e3)
    return {"update_ms": percentiles(update), "learn_ms": percentiles(learn)}


def serial(depth: int, data: Dataset, p: dict) -> dict:
    """The very same dni arithmetic, every stage in turn in this one process: samples/s."""
    cfg = plans.for_config(config("dni", depth, p, Path(".")), data).wire
    net = build_network(cfg)
    rng = np.random.default_rng(p["seed"])  # the epoch loop's shuffle, so the very same batches
    t0, cpu = time.perf_counter(), time.process_time()
    n = 0
    for b, (x, y) in enumerate(batches(data.x_train, data.y_train, p["batch"], rng)):
        step(net, b, x, y)
        n += len(y)
    return {"samples_per_second": n / (time.perf_counter() - t0),
            "cpu_ms_per_batch": (time.process_time() - cpu) * 1e3 / (b + 1)}


def throughput(depth: int, data: Dataset, p: dict, tmp: Path) -> dict:
    """The dni pipeline against the 2-core ideal, in `repeats` adjacent pairs (serial, then pipeline).

    This machine's speed drifts by 10-20% over tens of seconds (a shared host): a ratio is
    taken within each pair, where both saw the same conditions, and the median pair reported.
    """
    pairs = []
    for i in range(p["repeats"]):
        ser = serial(depth, data, p)
        run = pipeline("dni", depth, data, p, tmp, tag=f"-throughput{i}")
        pairs.append({"serial_samples_per_second": ser["samples_per_second"],
                      "pipeline_samples_per_second": run["samples_per_second"],
                      "fraction_of_ideal": run["samples_per_second"] / (2 * ser["samples_per_second"]),
                      "serial_cpu_ms_per_batch": ser["cpu_ms_per_batch"],
                      "pipeline_cpu_ms_per_batch": run["cpu_ms_per_batch"]})
    median = pairs[int(np.argsort([q["fraction_of_ideal"] for q in pairs])[len(pairs) // 2])]
    cpu = median["pipeline_cpu_ms_per_batch"]
    return {"depth": depth, "repeats": p["repeats"], "pairs": pairs, **median,
            "ideal_samples_per_second": 2 * median["serial_samples_per_second"],
            # Both cores busy all the time at this much CPU per batch would give this fraction:
            # the ceiling the messaging cost leaves, whatever the scheduling.
            "cpu_bound_fraction": median["serial_cpu_ms_per_batch"] / (cpu["workers"] + cpu["coordinator"])}


def headline(runs: list[dict], depth: int) -> dict:
    """Stage 1's update latency and the samples/s at one depth, both modes side by side."""
    out = {"depth": depth}
    for r in runs:
        if r["depth"] == depth:
            lat = r["stages"][0]["latency_ms"]
            out.update({f"{r['mode']}_p50_ms": lat["p50"], f"{r['mode']}_p99_ms": lat["p99"],
                        f"{r['mode']}_samples_per_second": r["samples_per_second"]})
    out["ratio"] = out["backprop_p50_ms"] / out["dni_p50_ms"]
    return out


def targets(result: dict) -> list[dict]:
    runs = {(r["mode"], r["depth"]): r for r in result["runs"]}
    depths = result["params"]["depths"]
    lo, hi = min(depths), max(depths)

    def p50(mode, depth):
        return runs[(mode, depth)]["stages"][0]["latency_ms"]["p50"]

    out = [report.target(f"dni stage-1 p50 latency at {lo} stages / its isolated compute",
                        p50("dni", lo) / result["isolated_stage1"]["update_ms"]["p50"], "<=", 1.3)]
    if hi > lo:
        out += [report.target(f"dni stage-1 p50 growth {lo} -> {hi} stages",
                              p50("dni", hi) / p50("dni", lo), "<=", 2.0),
                report.target(f"backprop stage-1 p50 growth {lo} -> {hi} stages",
                             p50("backprop", hi) / p50("backprop", lo), ">=", 3.0)]
    stuck = [f"{r['mode']} at {r['depth']}" for r in result["runs"] if not r["learning"]["learns"]]
    not_learning = f" (not: {', '.join(stuck)})" if stuck else ""
    out += [report.target("fraction of timed configurations that learn" + not_learning,
                          1 - len(stuck) / len(result["runs"]), ">=", 1.0),
            report.target(f"backprop / dni stage-1 p50 at {hi} stages",
                          p50("backprop", hi) / p50("dni", hi), ">=", 3.0),
            report.target(f"{result['throughput']['depth']}-stage dni samples/s / 2-core ideal",
                         result["throughput"]["fraction_of_ideal"], ">=", 0.85)]
    return out + stagememory.targets(result.get("memory"))


def run(depths: list[int], width: int, batch: int, steps: int, warmup: int, window: int,
        throughput_depth: int, repeats: int, seed: int, conv: list[int] = (), data: str = "") -> dict:
    """conv: conv stages' filters (MNIST from `data`): every run is then that net, its conv stages, one dense
    stage of `width` and the head, whatever the depths asked."""
    if conv:
        if not data:
            raise ValueError("--conv: conv stages need images: give --data with MNIST")
        depths, throughput_depth = [len(conv) + 2], len(conv) + 2
    if min(depths) < 2 or throughput_depth < 2:
        raise ValueError("--depths/--throughput-depth: a network needs at least 2 stages (a layer and the head)")
    if min(width, batch, window, repeats) < 1 or not 0 <= warmup < steps:
        raise ValueError("--width, --batch, --window, --repeats must be positive and 0 <= --warmup < --steps")
    depths = sorted(set(depths))
    p = {"depths": depths, "width": width, "batch": batch, "steps": steps, "warmup": warmup, "window": window,
         "throughput_depth": throughput_depth, "repeats": repeats, "seed": seed,
         "conv": ",".join(map(str, conv)), "data": data,
         "optimizer": Config.optimizer, "lr": Config.lr,
         "synthesizer": (lambda h: f"{h}-unit MLP" if h else "linear")(Config(mode="dni").validate().synth_hidden),
         "learns_if": LEARNS}
    result = {"bench": "latency", "machine": report.machine(), "params": p}
    print(report.describe(result["machine"]))
    data = task(p)
    result["isolated_stage1"] = isolated_stage1(data, p)
    with tempfile.TemporaryDirectory(prefix="dni-bench-") as tmp:
        runs = []
        for depth in depths:
            for mode in MODES:
                runs.append(pipeline(mode, depth, data, p, Path(tmp)))
                print_run(runs[-1])
        result["runs"] = runs
        result["throughput"] = throughput(throughput_depth, data, p, Path(tmp))
    if conv:   # the dni run's stages
        cfg = plans.for_config(config("dni", depths[0], p, Path(".")), data).wire
        result["memory"] = stagememory.measure(cfg, batch, window, runs[0]["stages"])
    result["headline"] = [headline(runs, d) for d in depths]
    result["targets"] = targets(result)
    print_summary(result)
    return result


def print_run(r: dict) -> None:
    cpu = r["cpu_ms_per_batch"]
    print(f"\n{r['mode']}, {r['depth']} stages: {r['samples_per_second']:,.0f} samples/s "
          f"({r['steps']} batches in {r['train_seconds']:.2f} s); {r['page_faults_per_batch']:.0f} page faults a batch")
    print(f"  CPU per batch {cpu['workers'] + cpu['coordinator']:.2f} ms: arithmetic {cpu['arithmetic']:.2f}, "
          f"messaging in the workers' loops {cpu['messaging']:.2f}, their ZeroMQ/pyzmq threads {cpu['threads']:.2f}, "
          f"coordinator {cpu['coordinator']:.2f}")
    ln = r["learning"]
    print(f"  training loss {ln['loss_start']:.3f} -> {ln['loss_end']:.3f}, held-out accuracy "
          f"{ln['held_out_accuracy']:.1%} (chance {ln['chance']:.0%}): "
          + ("learns" if ln["learns"] else "DOES NOT LEARN: its latency figures are of a network that does not train"))
    print("  stage  p50 ms   p99 ms  | " + " ".join(f"{c:>7s}" for c in (*CATEGORIES, "blocked")) + "  peak RSS MB")
    for s in r["stages"]:
        lat, frac = s["latency_ms"], s["time_fraction"]
        print(f"  {s['stage']:5d} {lat['p50']:7.3f} {lat['p99']:8.3f}  | "
              + " ".join(f"{frac[c]:7.1%}" for c in (*CATEGORIES, "blocked")) + f"  {s['peak_rss_mb']:11.0f}")


def print_summary(result: dict) -> None:
    iso = result["isolated_stage1"]
    print(f"\nstage 1 alone in one process: forward + synthetic gradient + update p50 "
          f"{iso['update_ms']['p50']:.3f} ms (p99 {iso['update_ms']['p99']:.3f}); "
          f"training its synthesizer p50 {iso['learn_ms']['p50']:.3f} ms")
    print("\nstage-1 update latency p50 (p99) in ms, and samples/s, by depth")
    print("  stages                dni           backprop  backprop/dni  samples/s dni  backprop")
    for h in result["headline"]:
        print(f"  {h['depth']:6d} {h['dni_p50_ms']:8.3f} ({h['dni_p99_ms']:7.2f}) {h['backprop_p50_ms']:8.3f} "
              f"({h['backprop_p99_ms']:7.2f}) {h['ratio']:12.1f}x {h['dni_samples_per_second']:14,.0f} "
              f"{h['backprop_samples_per_second']:9,.0f}")
    t = result["throughput"]
    print(f"\nthroughput, {t['depth']} stages dni, {t['repeats']} pairs of (serial in one process, pipeline):")
    for q in t["pairs"]:
        print(f"  serial {q['serial_samples_per_second']:8,.0f} samples/s, "
              f"pipeline {q['pipeline_samples_per_second']:8,.0f} -> {q['fraction_of_ideal']:.2f} of the 2-core ideal")
    cpu = t["pipeline_cpu_ms_per_batch"]
    print(f"  median pair: {t['fraction_of_ideal']:.2f} of ideal ({t['pipeline_samples_per_second']:,.0f} against "
          f"{t['ideal_samples_per_second']:,.0f})\n  CPU per batch: serial {t['serial_cpu_ms_per_batch']:.2f} ms; "
          f"pipeline {cpu['workers'] + cpu['coordinator']:.2f} ms = arithmetic {cpu['arithmetic']:.2f} + messaging "
          f"{cpu['messaging']:.2f} + ZeroMQ/pyzmq threads {cpu['threads']:.2f} + coordinator {cpu['coordinator']:.2f}"
          f"\n  with both cores busy throughout, that CPU would allow {t['cpu_bound_fraction']:.2f} of ideal")
    report.print_targets(result["targets"])
