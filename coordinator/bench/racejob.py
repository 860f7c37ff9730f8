"""One job of `dni bench race`: a row's training on this host, or across the network lab; its figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from coordinator.bench.latency import staleness
from coordinator.config import Config
from workers.runtime import blas

TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Job:
    """A row (name and `dni run` flags) at one depth and link delay; `single`: in one process."""
    row: str
    flags: tuple[str, ...]
    stages: int
    delay_ms: float
    single: bool = False

    def tag(self) -> str:
        return f"{self.row}-k{self.stages}-d{self.delay_ms:g}"


def flag(flags: tuple[str, ...], name: str, default: str) -> str:
    """The value of `name` in a row's flags (the last one given, as argparse takes it), or `default`."""
    at = [i for i, f in enumerate(flags) if f == name]
    return flags[at[-1] + 1] if at else default


def common(job: Job, p: dict) -> list[str]:
    """The `dni run` flags every row shares at this depth: the race's network, data, budget and cadence."""
    conv = p.get("conv", [])
    return [*(["--conv", ",".join(map(str, conv))] if conv else []),
            "--hidden", ",".join([str(p["width"])] * (job.stages - 1 - len(conv))), "--epochs", str(p["epochs"]),
            "--batch-size", str(p["batch"]), "--seed", str(p["seed"]), "--eval-every", str(p["eval_every"]),
            "--train-subset", str(p["train_subset"]), *(["--data", p["data"]] if p["data"] else [])]


def run_here(job: Job, p: dict, out: Path) -> dict:
    """The job on this host (no link delay): `dni run`, or the single-process row; its summary.json."""
    if job.single:
        argv = [sys.executable, "-m", "coordinator.bench.single"]
        threads = str(p["single_threads"])
        env = {**os.environ, **dict.fromkeys(blas.VARIABLES, threads), "DNI_BLAS_THREADS": threads}
    else:
        argv = [sys.executable, "-m", "coordinator", "run", "--no-progress", "--overwrite"]
        env = blas.pinned()
    # Checkpoints at the end only: their cost is no mode's.
    argv += [*common(job, p), *job.flags, "--out", str(out), "--checkpoint-every", "0", "--checkpoint-seconds", "0"]
    with open(out.parent / f"{out.name}.log", "w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            rc = None
        finally:   # a timeout or Ctrl-C: the coordinator stops and reaps its workers on SIGTERM
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    if rc is None:
        raise RuntimeError(f"{job.tag()}: the job did not finish within {TIMEOUT_S:.0f} s; see {out}.log")
    if rc:
        raise RuntimeError(f"{job.tag()}: the job failed (exit {rc}); see {out}.log")
    return json.loads((out / "summary.json").read_text())


def run_in_lab(job: Job, p: dict, keys: Path | None, out: Path, use_netem: bool) -> dict:
    """The job across the network lab's hosts (coordinator/bench/netlab): its summary.json and the relays' counts."""
    from coordinator.bench.netlab import job as labjob
    flags = job.flags
    setting = labjob.Setting(flag(flags, "--mode", Config.mode), job.stages, job.delay_ms,
                             int(flag(flags, "--window", str(Config.window))), bandwidth=p["bandwidth"],
                             slow_stage=p["slow_stage"], slow_share=p["slow_share"],
                             credit=flag(flags, "--credit", Config.credit))
    # --overwrite: a job run again (a race resumed after it failed) replaces what it left in --keep's directory
    lab = {**p, "job": [*common(job, p), *flags, "--checkpoint-seconds", "0", "--overwrite"]}
    lab_figures = labjob.run(setting, lab, keys, out, use_netem)
    return {**json.loads((out / "summary.json").read_text()), "relays": lab_figures["relays"],
            "links": lab_figures["links"]}


def at_target(validation: list[dict], target: float) -> dict | None:
    """The first evaluation at or above `target`."""
    return next((v for v in validation if v["val_accuracy"] >= target), None)


def at_budget(validation: list[dict], budget_s: float) -> float | None:
    """The validation accuracy of the last evaluation within `budget_s` seconds of training."""
    within = [v["val_accuracy"] for v in validation if v["train_seconds"] <= budget_s]
    return within[-1] if within else None


def figures(job: Job, summary: dict, p: dict, out: Path) -> dict:
    """Every figure of a job, from its run directory `out` (summary.json; metrics.jsonl for staleness)."""
    steps, validation = summary["steps"], summary["validation"]
    hit = at_target(validation, p["target"])
    if job.single:
        one = summary["single"]
        cpu, rss, links = [one["cpu_s"] * 1e3 / steps], [one["peak_rss_mb"]], {}
    else:
        w = [summary["workers"][str(k)] for k in range(1, job.stages + 1)]
        cpu = [s["time_s"]["cpu"] * 1e3 / steps for s in w]
        rss = [s["peak_rss_mb"] for s in w]
        links = {f"{k}-{k + 1}": {"forward": w[k - 1]["bytes_sent"].get("next", 0) / steps,
                                  "backward": w[k]["bytes_sent"].get("prev", 0) / steps}
                 for k in range(1, job.stages)}
    latency = summary["update_latency_ms"]["1"]
    return {"row": job.row, "flags": list(job.flags), "stages": job.stages, "delay_ms": job.delay_ms,
            "single_process": job.single, "steps": steps, "train_seconds": summary["train_seconds"],
            "time_to_target_s": hit and hit["train_seconds"], "samples_to_target": hit and hit["samples"],
            "val_at_budget": {f"{b:g}": at_budget(validation, b) for b in p["budgets"]},
            "best_val_accuracy": max(v["val_accuracy"] for v in validation),
            "test_accuracy": summary["test_accuracy"], "samples_per_second": summary["samples_per_second"],
            "stage1_latency_ms": {"p50": latency["p50"], "p99": latency["p99"]},
            "bytes_per_batch": links, "cpu_ms_per_batch": cpu, "peak_rss_mb": rss,
            # how many updates old the targets were that the synthesizers fitted (after --warmup steps)
            "staleness": None if job.single else staleness(out, p["warmup"]),
            **({"relays": summary["relays"], "link_rtt": summary["links"]} if "relays" in summary else {}),
            "validation": [{k: v[k] for k in ("samples", "train_seconds", "val_accuracy")} for v in validation]}
