"""`dni bench latency`: update latency, samples/s and where time goes, dni against backprop, by depth."""
from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from coordinator import bench, trainer
from coordinator.cli import serve
from coordinator.config import Config
from coordinator.data import Dataset, batches, generated_task
from coordinator.metrics import percentiles
from workers.clock import CATEGORIES
from workers.reference import build_network, step
from workers.stage import Stage

MODES = ("dni", "backprop")


def config(mode: str, depth: int, width: int, batch: int, window: int, seed: int, out: Path) -> Config:
    # One epoch over exactly `steps` batches, one evaluation batch, no intermediate checkpoint:
    # the run is the training it measures.
    return Config(hidden=",".join([str(width)] * (depth - 1)), mode=mode, epochs=1, batch_size=batch,
                  eval_batch=batch, window=window, seed=seed, out=str(out), checkpoint_every=0,
                  progress=False).validate()


def task(width: int, batch: int, steps: int, seed: int) -> Dataset:
    """The generated task with `width` input features, so every hidden stage does the same work."""
    return generated_task(seed=seed, n_train=steps * batch, n_test=batch, n_features=width)


def stage_latencies(run_dir: Path, warmup: int) -> dict[int, list[float]]:
    out = defaultdict(list)
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            if "latency_ms" in rec and rec["step"] >= warmup:
                out[rec["stage"]].append(rec["latency_ms"])
    return out


def pipeline(mode: str, depth: int, data: Dataset, p: dict, tmp: Path) -> dict:
    """One real `dni run`-style job: coordinator here, one spawned `dni worker` per stage."""
    out = tmp / f"{mode}-{depth}"
    cfg = config(mode, depth, p["width"], p["batch"], p["window"], p["seed"], out)
    cpu = time.process_time()
    summary = serve(cfg, f"ipc://{tmp}/control-{mode}-{depth}", depth, spawn_local=True, dataset=data)
    cpu = time.process_time() - cpu
    latencies = stage_latencies(out, p["warmup"])
    stages = []
    for k in range(1, depth + 1):
        seconds = summary["workers"][str(k)]["time_s"]
        total = seconds["total"]
        stages.append({"stage": k, "latency_ms": percentiles(latencies[k]), "time_s": seconds,
                       "time_fraction": {c: seconds[c] / total for c in (*CATEGORIES, "blocked")}})
    # CPU the whole run cost the machine (workers and coordinator, every thread), per batch:
    # unlike wall time, hardly moved by whatever else runs on the machine.
    worker_cpu = sum(s["time_s"]["cpu"] for s in stages)
    return {"mode": mode, "depth": depth, "steps": summary["steps"], "train_seconds": summary["train_seconds"],
            "samples_per_second": summary["samples_per_second"],
            "cpu_ms_per_batch": {"workers": worker_cpu * 1e3 / summary["steps"],
                                 "coordinator": cpu * 1e3 / summary["steps"]},
            "page_faults_per_batch": sum(s["time_s"]["page_faults"] for s in stages) / summary["steps"],
            "stages": stages}


def isolated_stage1(data: Dataset, p: dict, n: int = 200) -> dict:
    """Stage 1's dni work for one batch in this process alone: forward, synthetic gradient, update
    (what its update latency covers), and the synthesizer's training apart."""
    cfg = trainer.network_config(config("dni", 2, p["width"], p["batch"], p["window"], p["seed"], Path(".")), data)
    stage = Stage(1, cfg["sizes"][0], cfg["sizes"][1], cfg)
    rng = np.random.default_rng(p["seed"])
    target = (rng.standard_normal((p["batch"], p["width"])) * 1e-3).astype(np.float32)
    update, learn = [], []
    for b, (x, y) in zip(range(n + p["warmup"]), batches(data.x_train, data.y_train, p["batch"], rng)):
        t0 = time.perf_counter()
        stage.forward_train(b, x, y, t0)
        stage.apply(b, stage.synthetic_gradient(b))
        t1 = time.perf_counter()
        stage.learn(b, target)
        t2 = time.perf_counter()
        if b >= p["warmup"]:
            update.append((t1 - t0) * 1e3)
            learn.append((t2 - t1) * 1e3)
    return {"update_ms": percentiles(update), "learn_ms": percentiles(learn)}


def serial(depth: int, data: Dataset, p: dict) -> dict:
    """The very same dni arithmetic, every stage in turn in this one process: samples/s."""
    cfg = trainer.network_config(config("dni", depth, p["width"], p["batch"], p["window"], p["seed"], Path(".")), data)
    net = build_network(cfg)
    rng = np.random.default_rng(p["seed"])  # the trainer's shuffle, so the very same batches
    t0, cpu = time.perf_counter(), time.process_time()
    n = 0
    for b, (x, y) in enumerate(batches(data.x_train, data.y_train, p["batch"], rng)):
        step(net, b, x, y)
        n += len(y)
    return {"depth": depth, "samples_per_second": n / (time.perf_counter() - t0),
            "cpu_ms_per_batch": (time.process_time() - cpu) * 1e3 / (b + 1)}


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

    out = [bench.target(f"dni stage-1 p50 latency at {lo} stages / its isolated compute",
                        p50("dni", lo) / result["isolated_stage1"]["update_ms"]["p50"], "<=", 1.3)]
    if hi > lo:
        out += [bench.target(f"dni stage-1 p50 growth {lo} -> {hi} stages", p50("dni", hi) / p50("dni", lo), "<=", 2.0),
                bench.target(f"backprop stage-1 p50 growth {lo} -> {hi} stages",
                             p50("backprop", hi) / p50("backprop", lo), ">=", 3.0)]
    out += [bench.target(f"backprop / dni stage-1 p50 at {hi} stages", p50("backprop", hi) / p50("dni", hi), ">=", 3.0),
            bench.target(f"{result['throughput']['depth']}-stage dni samples/s / 2-core ideal",
                         result["throughput"]["fraction_of_ideal"], ">=", 0.85)]
    return out


def run(depths: list[int], width: int, batch: int, steps: int, warmup: int, window: int,
        throughput_depth: int, seed: int) -> dict:
    if min(depths) < 2 or throughput_depth < 2:
        raise ValueError("--depths/--throughput-depth: a network needs at least 2 stages (a layer and the head)")
    if min(width, batch, window) < 1 or not 0 <= warmup < steps:
        raise ValueError("--width, --batch, --window must be positive and 0 <= --warmup < --steps")
    depths = sorted(set(depths))
    p = {"depths": depths, "width": width, "batch": batch, "steps": steps, "warmup": warmup, "window": window,
         "throughput_depth": throughput_depth, "seed": seed, "optimizer": Config.optimizer, "lr": Config.lr,
         "synthesizer": f"{Config.synth_hidden}-unit MLP" if Config.synth_hidden else "linear"}
    result = {"bench": "latency", "machine": bench.machine(), "params": p}
    print(bench.describe(result["machine"]))
    data = task(width, batch, steps, seed)
    result["isolated_stage1"] = isolated_stage1(data, p)
    with tempfile.TemporaryDirectory(prefix="dni-bench-") as tmp:
        runs = []
        for depth in depths:
            for mode in MODES:
                runs.append(pipeline(mode, depth, data, p, Path(tmp)))
                print_run(runs[-1])
        # The serial yardstick right next to the run it is set against: the machine may be
        # shared, and both should see the same conditions.
        ser = serial(throughput_depth, data, p)
        through = next((r for r in runs if r["mode"] == "dni" and r["depth"] == throughput_depth), None)
        if through is None:
            through = pipeline("dni", throughput_depth, data, p, Path(tmp))
            print_run(through)
    result["runs"] = runs
    result["throughput"] = {"depth": throughput_depth, "serial_samples_per_second": ser["samples_per_second"],
                            "ideal_samples_per_second": 2 * ser["samples_per_second"],
                            "pipeline_samples_per_second": through["samples_per_second"],
                            "fraction_of_ideal": through["samples_per_second"] / (2 * ser["samples_per_second"]),
                            "serial_cpu_ms_per_batch": ser["cpu_ms_per_batch"],
                            "pipeline_cpu_ms_per_batch": sum(through["cpu_ms_per_batch"].values()),
                            "run": through}
    result["headline"] = [headline(runs, d) for d in depths]
    result["targets"] = targets(result)
    print_summary(result)
    return result


def print_run(r: dict) -> None:
    cpu = r["cpu_ms_per_batch"]
    print(f"\n{r['mode']}, {r['depth']} stages: {r['samples_per_second']:,.0f} samples/s "
          f"({r['steps']} batches in {r['train_seconds']:.2f} s); CPU per batch {cpu['workers']:.2f} ms "
          f"in workers + {cpu['coordinator']:.2f} ms in the coordinator, {r['page_faults_per_batch']:.0f} page faults")
    print("  stage  p50 ms   p99 ms  | " + " ".join(f"{c:>7s}" for c in (*CATEGORIES, "blocked")))
    for s in r["stages"]:
        lat, frac = s["latency_ms"], s["time_fraction"]
        print(f"  {s['stage']:5d} {lat['p50']:7.3f} {lat['p99']:8.3f}  | "
              + " ".join(f"{frac[c]:7.1%}" for c in (*CATEGORIES, "blocked")))


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
    print(f"\nthroughput, {t['depth']} stages dni: {t['pipeline_samples_per_second']:,.0f} samples/s; serial in one "
          f"process {t['serial_samples_per_second']:,.0f}; 2-core ideal {t['ideal_samples_per_second']:,.0f} "
          f"-> {t['fraction_of_ideal']:.2f} of ideal\n  CPU per batch: serial {t['serial_cpu_ms_per_batch']:.2f} ms, "
          f"pipeline {t['pipeline_cpu_ms_per_batch']:.2f} ms (every process and thread)")
    bench.print_targets(result["targets"])
