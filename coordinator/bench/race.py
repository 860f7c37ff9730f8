"""`dni bench race`: time to accuracy of every way to train the same network, at each depth and link delay.

A row is data: a name and the `dni run` flags that make it. Every row trains the same network
on the same data for the same epochs, evaluated on the validation split (the last 10,000
training examples) at the same cadence with the training clock paused; the test set is read
once, at the end.
"""
from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
from pathlib import Path

from coordinator.bench import raceboard, racejob, racetune, report
from coordinator.bench.racejob import Job
from coordinator.config import Config
from coordinator.lists import parse

# The race's budget and target, chosen so that every row is timed to the same target at 0 ms
# (the JSON says so under params.why; the reduced race's dni reached 87-90% in 20,000 images).
TARGET, EPOCHS = 0.9, 1
WHY = ("one epoch of the 50,000 training images, target 90% validation accuracy: every row of the race "
       "reaches it at 0 ms (in one epoch of 20,000 images plain dni did not)")
SINGLE = "single"   # the row trained in one process with every core (coordinator/bench/single.py)
# Every row's settings as `dni bench race --tune` kept them, 3 tries a row on the validation split at 6
# stages, 0 and 20 ms, stage 1 feeding itself (docs/results/tune-race.json, docs/defaults.md; the link
# rows from the tuning before, fed by the coordinator); the single process and gpipe compute backprop's
# gradient, so they take the rate tuned for backprop. A --settings file adds rows or replaces any row's flags.
ROWS = {
    SINGLE: "--mode backprop --lr 2e-3",
    "backprop": "--mode backprop --lr 2e-3",
    "dni": "--mode dni --window 2 --lr 5e-4",
    "cdni": "--mode cdni --window 4",
    "gpipe": "--mode gpipe --lr 2e-3 --micro-batches 2",
    "pipedream": "--mode pipedream --lr 5e-4",
    "dni-link": "--mode dni --credit link --bp-lambda 0.5 --window 4",
    "cdni-link": "--mode cdni --credit link --bp-lambda 0.5 --window 4",
    # BP(1) under link credit that frees as the next stage takes a batch
    "cdni-taken": "--mode cdni --credit taken --window 2 --lr 5e-4",
}


def add_parser(kinds) -> argparse.ArgumentParser:
    race = kinds.add_parser("race", help="time to accuracy: one process, backprop, gpipe, pipedream, dni, cdni "
                            "by depth and link delay (delays need root)",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    race.add_argument("--rows", default=",".join(ROWS), help="the rows to race (names of ROWS or --settings)")
    race.add_argument("--settings", metavar="FILE", help="JSON {row: \"dni run flags\"}: rows to add or replace")
    race.add_argument("--tune", metavar="FILE", help=f"race {racetune.TRIES} settings of every row instead "
                      "(coordinator/bench/racetune.py) and write the best of each to FILE, for --settings")
    race.add_argument("--feeds", default="coordinator", help="who feeds stage 1 its training batches in every row "
                      "but the single process: coordinator, stage (dni run --feed stage: the row named ROW@stage), "
                      "or both")
    race.add_argument("--stages", default="3,6", help="stages per network")
    race.add_argument("--delays", default="0,5,20", help="one-way delay per link, ms (above 0: the network lab)")
    race.add_argument("--one-host", action="store_true", help="run on this host, no network lab (0 ms only)")
    race.add_argument("--target", type=float, default=TARGET, help="the validation accuracy to reach")
    race.add_argument("--budgets", default="10,30,60", help="seconds of training at which to read validation "
                      "accuracy")
    race.add_argument("--eval-every", type=int, default=25, help="training batches between evaluations")
    race.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of every job")
    race.add_argument("--single-threads", type=int, default=2, help="BLAS threads of the single-process row "
                      "(every core of a 2-core machine: a loaded one may do better with 1)")
    race.add_argument("--width", type=int, default=256, help="hidden layer width")
    race.add_argument("--conv", default="", help="conv stages' filter counts before the dense ones, e.g. 32,64 "
                      "(dni run --conv; they count in --stages: 32,64 at 4 stages is the conv net)")
    race.add_argument("--batch", type=int, default=Config.batch_size, help="batch size")
    race.add_argument("--data", help="MNIST directory (default: the generated task)")
    race.add_argument("--train-subset", type=int, default=0, help="train on the first N examples only (0: all)")
    race.add_argument("--bandwidth", help="the network lab's links shaped to this rate (tc HTB), e.g. 100mbit")
    race.add_argument("--slow-stage", type=int, default=0, help="the network lab: this stage's host slowed (0: none)")
    race.add_argument("--slow-share", type=float, default=0.25, help="cores the slow host gets (CFS quota)")
    race.add_argument("--warmup", type=int, default=50, help="the network lab: first steps left out of its figures")
    race.add_argument("--insecure", action="store_true", help="the network lab: no CURVE")
    race.add_argument("--keep", metavar="DIR", help="keep every job's run directory and log here")
    race.add_argument("--resume", action="store_true", help="go on with the race in --json FILE (written after "
                      "every job): the jobs it holds are not run again; the same options as the race it holds")
    return race


def rows(args) -> dict[str, tuple[str, ...]]:
    """The rows to race, by name: ROWS with --settings laid over them, picked by --rows."""
    known = dict(ROWS)
    if args.settings:
        try:
            extra = json.loads(Path(args.settings).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"--settings {args.settings}: not a readable JSON file ({exc})") from None
        if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
            raise ValueError(f"--settings {args.settings}: want an object of row names to `dni run` flags")
        known.update(extra)
    picked = parse(args.rows, "--rows", str, choices=tuple(known))
    feeds = parse(args.feeds, "--feeds", str, choices=("coordinator", "stage"), required=True)
    return fed({name: tuple(shlex.split(known[name])) for name in dict.fromkeys(picked)}, feeds)


def fed(rows: dict[str, tuple[str, ...]], feeds: list[str]) -> dict[str, tuple[str, ...]]:
    """Each row under each of `feeds`: fed by the coordinator under its own name, by stage 1 (--feed stage) as
    ROW@stage; the single process, one process with no feed, once."""
    out = {}
    for name, flags in rows.items():
        for feed in dict.fromkeys(feeds if racetune.row_of(name) != SINGLE else ["coordinator"]):
            out[name if feed == "coordinator" else name + racetune.STAGE_FED] = \
                flags if feed == "coordinator" else racetune.laid_over(flags, ("--feed", "stage"))
    return out


def params(args) -> dict:
    if not 0 < args.target <= 1:
        raise ValueError(f"--target {args.target}: a validation accuracy, above 0 and at most 1")
    conv = parse(args.conv, "--conv", low=1)
    stages = parse(args.stages, "--stages", low=2, required=True)
    if min(stages) < len(conv) + 2:
        raise ValueError(f"--stages {args.stages}: with --conv {args.conv}, each network needs more than "
                         f"{len(conv) + 1} stages (its conv stages, a dense one at least, the head)")
    if min(args.eval_every, args.epochs, args.width, args.batch, args.single_threads) < 1 or args.train_subset < 0:
        raise ValueError("--eval-every, --epochs, --width, --batch, --single-threads must be positive, "
                         "--train-subset not negative")
    return {"rows": rows(args), "stages": stages, "conv": conv,
            "delays": sorted(set(parse(args.delays, "--delays", float, low=0, required=True))),
            "target": args.target, "why": WHY if (args.target, args.epochs, args.train_subset) == (TARGET, EPOCHS, 0)
            else "the command's own budget and target", "budgets": parse(args.budgets, "--budgets", float, low=0),
            "eval_every": args.eval_every, "epochs": args.epochs, "single_threads": args.single_threads,
            "width": args.width, "batch": args.batch,
            "data": args.data, "train_subset": args.train_subset, "bandwidth": args.bandwidth,
            "slow_stage": args.slow_stage, "slow_share": args.slow_share, "warmup": args.warmup,
            "insecure": args.insecure, "seed": args.seed, "one_host": args.one_host}


def jobs(p: dict, delays: list[float]) -> list[Job]:
    """Every job, a setting's rows together; the single-process row once per depth (it has no links)."""
    return [Job(name, flags, k, d, single=racetune.row_of(name) == SINGLE) for k in p["stages"] for d in delays
            for name, flags in p["rows"].items() if racetune.row_of(name) != SINGLE or d == delays[0]]


def lab_refusal(p: dict) -> str | None:
    """Why the network lab cannot run here (None: it can); --one-host asks for none."""
    if p["one_host"]:
        return "--one-host"
    from coordinator.bench.netlab import runs
    return runs.refusal()


def begun(args, result: dict) -> dict:
    """The race to go on with: with --resume, the one in --json (its runs kept, its failed jobs to run again;
    ValueError if its options differ), else `result`, fresh."""
    if not args.resume:
        return result
    if not args.json:
        raise ValueError("--resume: give the race to go on with as --json FILE")
    try:
        before = json.loads(Path(args.json).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--resume: --json {args.json} is not a race's readable JSON ({exc})") from None
    if not isinstance(before, dict) or before.get("bench") != "race" or not isinstance(before.get("runs"), list):
        raise ValueError(f"--resume: --json {args.json} holds no race")
    now = json.loads(json.dumps(result["params"]))   # as the file holds them: lists, not tuples
    differ = [k for k in now if before.get("params", {}).get(k) != now[k]]
    if differ or before.get("where") != result["where"]:
        raise ValueError(f"--resume: the race in {args.json} ran with other options ({', '.join(differ or ['where'])})")
    return {**before, "failed": [], "continued": [*before.get("continued", []), result["machine"]]}


def done(result: dict, job: Job) -> bool:
    """Whether the race holds a run of this job already."""
    return any((r["row"], r["stages"], r["delay_ms"]) == (job.row, job.stages, job.delay_ms) for r in result["runs"])


def write(result: dict, path: str | None) -> None:
    """The race so far to `path` (if any), whole or not at all: a race stopped between jobs keeps those done."""
    if path:
        part = Path(f"{path}.part")
        part.write_text(json.dumps(result, indent=1) + "\n")
        part.replace(path)


def run(args) -> dict | None:
    try:
        p = params(args)
        tried = racetune.candidates(p["rows"]) if args.tune else None
        if tried:
            p["rows"] = tried
            Path(args.tune).parent.mkdir(parents=True, exist_ok=True)
        why = lab_refusal(p)
        result = begun(args, {"bench": "race", "machine": report.machine(),
                              "params": {**p, "rows": {k: " ".join(v) for k, v in p["rows"].items()}},
                              "where": "this host" if why else "network lab", "runs": [], "failed": []})
    except (ValueError, OSError) as exc:
        print(f"dni: error: {exc}", file=sys.stderr)
        return None
    delays = [0.0] if why else p["delays"]
    skipped = [*([f"delays {', '.join(f'{d:g}' for d in p['delays'] if d)} ms"] if p["delays"] != [0.0] else []),
               *(["--bandwidth"] if p["bandwidth"] else []), *(["--slow-stage"] if p["slow_stage"] else [])]
    if why and skipped:
        print(f"dni bench race: {', '.join(skipped)} not run: {why}")
    print(report.describe(result["machine"]))
    raceboard.print_settings(result["params"]["rows"], p["single_threads"])
    # A polite kill (SIGTERM) unwinds like Ctrl-C: jobs stopped, namespaces and relays removed.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with tempfile.TemporaryDirectory(prefix="dni-bench-race-") as tmp:
        where = Path(args.keep or tmp)
        where.mkdir(parents=True, exist_ok=True)
        keys = use_netem = None
        if not why:
            from coordinator.bench.netlab import shaping
            from protocol.keys import generate
            use_netem = shaping.netem()[0]
            result["delay_by"] = "netem" if use_netem else "relay"
            keys = None if p["insecure"] else generate(Path(tmp) / "keys", workers=max(p["stages"]))
        todo = jobs(p, delays)
        for i, job in enumerate(todo, 1):
            if done(result, job):
                print(f"[{i}/{len(todo)}] {job.row} K={job.stages} {job.delay_ms:g} ms: in {args.json} already")
                continue
            out = where / job.tag()
            try:
                summary = racejob.run_here(job, p, out) if why or job.single else \
                    racejob.run_in_lab(job, p, keys, out, use_netem)
            except (RuntimeError, OSError) as exc:   # one job lost (the lab's network, a worker): not the race
                result["failed"].append({"row": job.row, "stages": job.stages, "delay_ms": job.delay_ms,
                                         "error": str(exc)})
                print(f"[{i}/{len(todo)}] {job.row} K={job.stages} {job.delay_ms:g} ms: failed: {exc}", flush=True)
            else:
                result["runs"].append(racejob.figures(job, summary, p, out))
                raceboard.print_run(i, len(todo), result["runs"][-1], p["target"])
            write(result, args.json)
    result["settings"] = raceboard.settings(result["runs"], p["target"], delays)
    raceboard.print_tables(result)
    if tried:
        result["tuning"] = racetune.choose(result["runs"], tried)
        racetune.write(result["tuning"], args.tune)
        racetune.print_chosen(result["tuning"], args.tune)
    return result
