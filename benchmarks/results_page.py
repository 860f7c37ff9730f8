"""Renders docs/results.md, the one results page, from the JSON the benchmarks wrote (docs/results/*.json).

usage: python benchmarks/results_page.py [--check]
  depth.json, pipelines.json, harder.json: what `python benchmarks/defaults_tables.py depth|pipelines|harder`
                           writes (OUT/<table>.json)
  network.json:            what `dni bench network --json FILE` writes
  seqmnist*.json, copy.json: what `python benchmarks/rnn.py seqmnist|copy [--seed N]` writes (table.json)
  latency.json, transport.json: what `dni bench latency|transport --json FILE` writes
  race-*.json:             what `dni bench race --json FILE` writes, one file per run of the bench
  tune-race.json:          what `dni bench race --tune FILE --json tune-race.json` writes
  push.json:               `python benchmarks/push.py local|network` before and after issue 23 (table.json)
  conv.json, conv-*.json:  benchmarks/conv_accuracy.py, conv_speed.py --json, dni bench latency --conv --json
  conv-choice.json:        benchmarks/conv_synth_fit.py --json (fits) and the candidates' runs (runs)
  stall*.json:             what `dni bench stall --json FILE` writes, one file per run of the bench
  unlock.json:             what `python benchmarks/unlock.py accuracy|pupdate` writes (OUT/unlock.json), with notes
Copy a new run's JSON over the old one and run this script; --check only says whether the page is current
(tests/test_docs.py checks the same).
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # results_parts and the sections' modules: beside this script
from results_conv import conv_section  # noqa: E402
from results_convchoice import conv_choice_section  # noqa: E402
from results_parts import machine, ms, pct, pp, sources, table, targets, versus_backprop  # noqa: E402
from results_push import push_section  # noqa: E402
from results_race import race_section, tuning_section  # noqa: E402
from results_stall import stall_section  # noqa: E402
from results_unlock import unlock_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
PAGE = ROOT / "docs" / "results.md"
MODES = ("dni", "cdni", "backprop")   # the order of a table's rows
# sequential MNIST: seed 0's table.json (every mode), then one per further seed (`rnn.py seqmnist --seed N`)
RACES = sorted(p.name for p in RESULTS.glob("race-*.json"))
TUNING = "tune-race.json"   # what `dni bench race --tune FILE --json tune-race.json` writes
SEQMNIST = ["seqmnist.json", *sorted(p.name for p in RESULTS.glob("seqmnist-seed*.json"))]


def accuracy_table(rows: list[dict]) -> list[str]:
    """Test accuracy against backprop's at the same depth, with samples/s and stage 1's latency."""
    diff = versus_backprop(rows, "stages")
    body = [[str(r["stages"]), r["mode"], pct(r["test_accuracy"]), pp(diff[id(r)]) if id(r) in diff else "",
             f"{r['samples_per_second']:,.0f}", f"{r['stage1_p50_ms']:.2f} ms"] for r in rows]
    return table(["stages", "mode", "test accuracy", "vs backprop", "samples/s", "stage-1 update latency p50"],
                 ["---:", "---", "---:", "---:", "---:", "---:"], body)


def depth_section(rows: list[dict]) -> list[str]:
    return ["## Depth: MNIST at the defaults", "",
            "Every mode at the defaults, no flag beyond the network's shape: 784-256-...-10, batch 128, 20 epochs,",
            "window 2 (coordinator credit), seed 0, Adam 1e-3 cosine for the layers, linear synthesizers at",
            "`--synth-lr 0.3`, BP(1), centred inputs. Test accuracy on the 10,000 test images; samples/s over the",
            "training; stage 1's median update latency. One run after another on a 2-core machine shared with",
            "other jobs: compare samples/s and latency within a depth.", "",
            "```sh",
            "python benchmarks/defaults_tables.py depth   # runs these one at a time, writes runs/defaults/depth.json:",
            "dni run --data ../shared/data/mnist --mode MODE --hidden 256,256[,256[,256,256]] --epochs 20",
            "```", "",
            *accuracy_table(rows), *sources(["depth.json"], rows)]


def pipelines_section(rows: list[dict]) -> list[str]:
    epochs = rows[0]["epochs"]
    return ["## The pipelines against backprop: accuracy for the same epochs", "",
            "gpipe and pipedream at the defaults against locked backprop, on the same network for the same",
            f"{epochs} epochs (784-256-...-10 on MNIST, 0 ms, batch 128, Adam 1e-3 cosine, seed 0, gpipe's 4",
            "micro-batches; the depth table above ran 20 epochs, more than a machine shared with other jobs",
            "left time for). The target: each within 0.3 pp of backprop's test accuracy at 3 and 6 stages. One",
            "run after another: compare samples/s and latency within a depth only.", "",
            "```sh",
            f"python benchmarks/defaults_tables.py pipelines --epochs {epochs} --out runs/pipelines   # one at a time:",
            f"dni run --data ../shared/data/mnist --mode MODE --hidden 256,256[,256,256,256] --epochs {epochs}",
            "```", "",
            *accuracy_table(rows), *sources(["pipelines.json"], rows)]


def harder_section(rows: list[dict]) -> list[str]:
    diff = versus_backprop(rows, "data")
    body = [[Path(r["data"]).name, r["mode"], pct(r["test_accuracy"]), pp(diff[id(r)]) if id(r) in diff else "",
             f"{r['train_loss_last100']:.3f}", f"{r['samples_per_second']:,.0f}", f"{r['stage1_p50_ms']:.2f} ms",
             ", ".join(f"{c:.2f}" for c in r["synth_cosine"].values())] for r in rows]
    return ["## Harder tasks made from MNIST", "",
            "784-256-256-10, 20 epochs, every option at its default, seed 0, one run each, on the four tasks",
            "`python -m coordinator.data.variants runs/tasks` writes (what each task tests:",
            "[defaults.md](defaults.md#harder-tasks)). Samples/s and latency were measured with other jobs on the",
            "2 cores: compare them within a pair of rows only.", "",
            "```sh",
            "python benchmarks/defaults_tables.py harder --tasks runs/tasks --out runs/defaults",
            "```", "",
            *table(["task", "mode", "test accuracy", "vs backprop", "train loss, last 100 batches", "samples/s",
                    "stage-1 p50", "synthesizer cosine (stage 1, 2)"],
                   ["---", "---", "---:", "---:", "---:", "---:", "---:", "---"], body),
            *sources(["harder.json"], rows)]


def network_section(result: dict) -> list[str]:
    p, runs = result["params"], result["runs"]
    delays = p["delays"]
    # the main sweep (network.settings): every mode at the window, dni at the throughput window; 2 stages is only
    # the projection's check
    base = [r for r in runs if r["credit"] == p["credits"][0] and not r["slow_stage"] and not r["bandwidth"]
            and r["coordinator_delayed"] and r["stages"] > 2
            and (r["window"] == p["window"] or (r["mode"], r["window"]) == ("dni", p["throughput_window"]))]
    groups = dict.fromkeys((r["stages"], r["mode"], r["window"]) for r in base)
    body = []
    for k, mode, w in sorted(groups, key=lambda g: (g[2] != p["window"], g[0], MODES.index(g[1]))):
        cells = {r["delay_ms"]: r for r in base if (r["stages"], r["mode"], r["window"]) == (k, mode, w)}
        label = mode if w == p["window"] else f"{mode}, window {w}"
        body.append([str(k), label, *(f"{ms(cells[d]['stage1_latency_ms']['p50'])} / "
                                      f"{cells[d]['samples_per_second']:,.0f}" if d in cells else "" for d in delays)])
    acc = [a for a in result["accuracy"] if a["credit"] == p["credits"][0]]
    adelays = sorted({a["delay_ms"] for a in acc})
    last = adelays[-1]
    arows = []
    for mode, w in sorted({(a["mode"], a["window"]) for a in acc}, key=lambda g: (g[0] != "cdni", g[1])):
        cells = {a["delay_ms"]: a for a in acc if (a["mode"], a["window"]) == (mode, w)}
        stale = cells[last]["staleness_mean"] if last in cells else None
        arows.append([mode, str(w), *(pct(cells[d]["test_accuracy"]) if d in cells else "" for d in adelays),
                      f"{stale:.2f}" if stale is not None else ""])
    columns = [f"{d:g} ms" for d in delays]
    return ["## Across slow links", "",
            "`dni bench network` ([network.md](network.md)): `dni coordinator` and one `dni worker` per host, each",
            "host its own network namespace, over TCP with CURVE, every link delayed by the one-way delay given.",
            f"Generated task, width {p['width']}, batch {p['batch']}, {p['epochs']} epochs, every option of",
            "`dni run` at its default; one run on a 2-core machine shared with other sessions.", "",
            f"Stage-1 update latency p50 (ms) and samples/s, window {p['window']} unless named:", "",
            *table(["stages", "mode", *columns], ["---", "---", *["---:"] * len(columns)], body),
            f"Test accuracy against delay and window ({p['focus_stages']} stages, the same budget for every job):", "",
            *table(["mode", "window", *(f"{d:g} ms" for d in adelays), f"mean staleness at {last:g} ms"],
                   ["---", "---:", *["---:"] * len(adelays), "---:"], arows),
            *sources(["network.json"], [result])]


def copy_table(result: dict) -> list[str]:
    """The longest length each mode solved at each box length T (rnn.py copy's table.json; rows with flags,
    validation runs, are left out); a mode not run shows a dash. The gain: dni's length over truncated BPTT's."""
    rows = {key: r for key, r in result.items() if key != "source"}
    lengths = sorted({int(key.split()[0][2:]) for key in rows})
    modes = ("dni", "dni+aux", "truncated", "backprop")

    def solved(T: int, mode: str) -> str:
        return str(rows[f"T={T} {mode}"]["solved"]) if f"T={T} {mode}" in rows else "—"

    def gain(T: int) -> str:
        dni, cut = rows.get(f"T={T} dni"), rows.get(f"T={T} truncated")
        return f"{dni['solved'] / cut['solved']:.2f}x" if dni and cut and cut["solved"] else "—"

    body = [[str(T), str(next(r["boxes"] for k, r in rows.items() if k.startswith(f"T={T} "))),
             *(solved(T, m) for m in modes), gain(T)] for T in lengths]
    tried = [[key.split()[0][2:], key.split()[1], f"`{r['flags']}`", str(r["solved"])]
             for key, r in rows.items() if r.get("flags")]
    return [*table(["box length T", "boxes", "dni", "dni + Aux", "truncated", "full BPTT (backprop)",
                    "dni / truncated"], ["---:", "---:", "---:", "---:", "---:", "---:", "---:"], body),
            *(["The same budget with other settings (the validation runs that chose the defaults):", "",
               *table(["box length T", "mode", "flags", "solved"], ["---:", "---", "---", "---:"], tried)]
              if tried else [])]


def recurrent_section(seqmnist: list[dict], copy: dict) -> list[str]:
    """seqmnist: one table.json per seed (seed 0 first); copy: the Copy task's table.json."""
    names = {"backprop": "backprop (full BPTT, locked)", "truncated": "truncated (BPTT cut every box)"}
    body = []
    for mode in ("backprop", "cdni", "dni", "truncated"):
        runs = [t[mode] for t in seqmnist if mode in t]
        if runs:
            body.append([names.get(mode, mode), " / ".join(pct(r["test_accuracy"]) for r in runs),
                         " / ".join(f"{r['train_seconds']:.0f}" for r in runs)])
    return ["## Recurrent time boxes", "",
            "Sequential MNIST: 28 rows, 4 LSTM boxes of 7 steps, 128 units, tied weights, 10 epochs, `--lr 1e-3`,",
            "every other option at its default; test accuracy on the 10,000 test images, seed 0 (where a cell",
            "holds several, seeds 0, 1, 2, ... in order). The Copy task: LSTM 64 units, batch 64, `--lr 3e-3`,",
            "constant rate, 50 epochs of 100 batches, curriculum from length 1; the longest length solved.",
            "What the time boxes are and how to read these: [recurrent.md](recurrent.md#measured).", "",
            "```sh",
            "python benchmarks/rnn.py seqmnist    # and --modes dni --seed 1, --seed 2",
            "python benchmarks/rnn.py copy",
            "```", "",
            *table(["mode", "test accuracy", "train s"], ["---", "---:", "---:"], body),
            *sources(SEQMNIST, seqmnist),
            *copy_table(copy), *sources(["copy.json"], [copy])]


def bench_section(latency: dict, transport: dict) -> list[str]:
    body = [[str(h["depth"]), f"{ms(h['dni_p50_ms'])} / {ms(h['dni_p99_ms'])}",
             f"{ms(h['backprop_p50_ms'])} / {ms(h['backprop_p99_ms'])}", f"{h['ratio']:.1f}x",
             f"{h['dni_samples_per_second']:,.0f}", f"{h['backprop_samples_per_second']:,.0f}"]
            for h in latency["headline"]]
    t = latency["throughput"]
    hops = [[tr["transport"], str(s["kib"]), f"{s['project']['rtt_us']['p50']:.0f} / {s['raw']['rtt_us']['p50']:.0f}",
             f"{s['overhead']['rtt_p50_ratio']:.2f}", f"{s['project']['stream_msgs_per_s']:,.0f} / "
             f"{s['raw']['stream_msgs_per_s']:,.0f}"] for tr in transport["transports"] for s in tr["sizes"]]
    return ["## Update latency and the cost of a message", "",
            "`dni bench latency` and `dni bench transport` at their defaults ([benchmarks.md](benchmarks.md) says",
            f"what they run). Latency: {machine(latency)}.", "",
            *table(["stages", "dni stage-1 update p50 / p99 ms", "backprop p50 / p99 ms", "backprop / dni p50",
                    "dni samples/s", "backprop samples/s"], ["---:", "---:", "---:", "---:", "---:", "---:"], body),
            f"A {t['depth']}-stage dni run against the 2-core ideal (twice the same arithmetic run serially in one",
            f"process; the median of {t['repeats']} adjacent pairs): {t['pipeline_samples_per_second']:,.0f} against "
            f"{t['ideal_samples_per_second']:,.0f} samples/s, {t['fraction_of_ideal']:.2f} of it.", "",
            *targets(latency),
            f"Transport: {machine(transport)}. Round trip p50 (µs) and streaming messages/s, the project's messages",
            "against raw pyzmq zero-copy messages of the same bytes:", "",
            *table(["transport", "KiB", "round trip p50 ours / raw", "ours / raw", "messages/s ours / raw"],
                   ["---", "---:", "---:", "---:", "---:"], hops),
            *targets(transport),
            "One run of each. Streaming figures scatter most: over six runs of `dni bench transport` in a row on",
            "this machine the 128 KiB ipc streaming ratio ranged from 0.53 to 1.11 and the added round trip from",
            "24 to 56 µs, with no change to the code they time.", "",
            *sources(["latency.json", "transport.json"], [latency, transport])]


def load(name: str):
    return json.loads((RESULTS / name).read_text())


def render() -> str:
    lines = ["# Results", "",
             "<!-- Generated by benchmarks/results_page.py from docs/results/*.json: edit those, not this page. -->",
             "",
             "What the defaults reach, measured. Why the defaults are what they are: [defaults.md](defaults.md);",
             "recurrent results: [recurrent.md](recurrent.md#measured); `dni bench latency` and `transport`:",
             "[benchmarks.md](benchmarks.md); the sweeps and runs on the way: [lab/](lab/README.md).", "",
             *depth_section(load("depth.json")), *pipelines_section(load("pipelines.json")),
             *harder_section(load("harder.json")),
             *network_section(load("network.json")),
             *recurrent_section([load(name) for name in SEQMNIST], load("copy.json")),
             *push_section(load("push.json")),
             *tuning_section(TUNING, load(TUNING)), *race_section([(name, load(name)) for name in RACES]),
             *conv_section(load("conv.json"), load("conv-speed.json"), load("conv-latency.json")),
             *conv_choice_section(load("conv-choice.json"), load("conv.json")),
             *unlock_section(load("unlock.json")), *stall_section(load),
             *bench_section(load("latency.json"), load("transport.json")),
             "[Back to the README](../README.md)"]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only say whether docs/results.md is current")
    page = render()
    if p.parse_args().check:
        current = PAGE.read_text() == page
        print("docs/results.md is " + ("current" if current else "stale: run python benchmarks/results_page.py"))
        return 0 if current else 1
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
