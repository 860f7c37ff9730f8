"""Renders docs/results.md, the one results page, from the JSON the benchmarks wrote (docs/results/*.json).

usage: python benchmarks/results_page.py [--check]
  depth.json, harder.json: what `python benchmarks/defaults_tables.py depth|harder` writes (OUT/<table>.json)
  network.json:            what `dni bench network --json FILE` writes
  seqmnist*.json, copy.json: what `python benchmarks/rnn.py seqmnist|copy [--seed N]` writes (table.json)
  latency.json, transport.json: what `dni bench latency|transport --json FILE` writes
  race-*.json:             what `dni bench race --json FILE` writes, one file per run of the bench
  conv.json, conv-*.json:  benchmarks/conv_accuracy.py, conv_speed.py --json, dni bench latency --conv --json
Copy a new run's JSON over the old one and run this script; --check only says whether the page is current
(tests/test_docs.py checks the same).
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
PAGE = ROOT / "docs" / "results.md"
MODES = ("dni", "cdni", "backprop")   # the order of a table's rows
# sequential MNIST: seed 0's table.json (every mode), then one per further seed (`rnn.py seqmnist --seed N`)
RACES = sorted(p.name for p in RESULTS.glob("race-*.json"))
SEQMNIST = ["seqmnist.json", *sorted(p.name for p in RESULTS.glob("seqmnist-seed*.json"))]


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def pp(x: float) -> str:
    return f"{100 * x:+.2f} pp".replace("-", "−")


def table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table; align holds '---' or '---:' per column."""
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def sources(names: list[str], records: list[dict]) -> list[str]:
    """Where a table's figures come from: the JSON files, and their "source" notes when they have them."""
    notes = list(dict.fromkeys(r["source"] for r in records if r.get("source")))
    files = ", ".join(f"[results/{name}](results/{name})" for name in names)
    return [f"From {files}" + "".join(f"; {n}" if i else f": {n}" for i, n in enumerate(notes)) + ".", ""]


def versus_backprop(rows: list[dict], key: str) -> dict:
    """Each row's test accuracy minus backprop's in the same group (same stages, or same task)."""
    base = {r[key]: r["test_accuracy"] for r in rows if r["mode"] == "backprop"}
    return {id(r): r["test_accuracy"] - base[r[key]] for r in rows if r["mode"] != "backprop" and r[key] in base}


def depth_section(rows: list[dict]) -> list[str]:
    diff = versus_backprop(rows, "stages")
    body = [[str(r["stages"]), r["mode"], pct(r["test_accuracy"]), pp(diff[id(r)]) if id(r) in diff else "",
             f"{r['samples_per_second']:,.0f}", f"{r['stage1_p50_ms']:.2f} ms"] for r in rows]
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
            *table(["stages", "mode", "test accuracy", "vs backprop", "samples/s", "stage-1 update latency p50"],
                   ["---:", "---", "---:", "---:", "---:", "---:"], body),
            *sources(["depth.json"], rows)]


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


def recurrent_section(seqmnist: list[dict], copy: dict) -> list[str]:
    """seqmnist: one table.json per seed (seed 0 first); copy: the Copy task's table.json."""
    names = {"backprop": "backprop (full BPTT, locked)", "truncated": "truncated (BPTT cut every box)"}
    body = []
    for mode in ("backprop", "cdni", "dni", "truncated"):
        runs = [t[mode] for t in seqmnist if mode in t]
        if runs:
            body.append([names.get(mode, mode), " / ".join(pct(r["test_accuracy"]) for r in runs),
                         " / ".join(f"{r['train_seconds']:.0f}" for r in runs)])
    rows = {key: r for key, r in copy.items() if key != "source"}
    lengths = sorted({int(key.split()[0][2:]) for key in rows})
    copy_body = [[str(T), str(rows[f"T={T} dni"]["boxes"]),
                  *(str(rows[f"T={T} {m}"]["solved"]) for m in ("dni", "truncated", "backprop"))] for T in lengths]
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
            *table(["box length T", "boxes", "dni", "truncated", "full BPTT (backprop)"],
                   ["---:", "---:", "---:", "---:", "---:"], copy_body),
            *sources(["copy.json"], [copy])]


def machine(result: dict) -> str:
    m = result["machine"]
    blas = m["blas"]
    return (f"{m['cpus']} cores, {blas['name']} {blas.get('version', '')} kernel {blas.get('kernel', '?')} with "
            f"{blas.get('threads', '?')} thread, numpy {m['numpy']}, pyzmq {m['pyzmq']}, load average "
            f"{' '.join(f'{x:.2f}' for x in m['load_average'])} at the start")


def targets(result: dict) -> list[str]:
    return [f"- {'pass' if t['pass'] else '**miss**'}: {t['name']}: {t['value']:.3g} (want {t['op']} {t['limit']:g})"
            for t in result["targets"]] + [""]


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


def race_section(results: list[tuple[str, dict]]) -> list[str]:
    """One table per (stages, delay) of every race run: the rows by time to target, the first and by what factor."""
    out = ["## The race: time to accuracy", "",
           "`dni bench race` ([benchmarks.md](benchmarks.md#dni-bench-race-time-to-accuracy)): the same network",
           "trained by each row on the same processes and links, validation accuracy every `--eval-every` batches",
           "with the clock paused, the test set read once at the end. Rows not tuned on the validation split run",
           "their defaults (`ROWS` in coordinator/bench/race.py says which).", ""]
    for name, result in results:
        p = result["params"]
        out += [f"From [results/{name}](results/{name}): {p['width']}-wide hidden layers on MNIST's first "
                f"{p['train_subset']:,} training images, {p['epochs']} epoch(s), target {pct(p['target'])}, "
                f"validation every {p['eval_every']} batches; links through the {result['where']}. "
                f"{machine(result)}: read the ratios, not the rates.", ""]
        for board in result["settings"]:
            k, d = board["stages"], board["delay_ms"]
            # the single process has no links: its one run stands in every delay's table
            here = [r for r in result["runs"] if r["stages"] == k and (r["delay_ms"] == d or r["single_process"])]
            runs = sorted(here, key=lambda r: (r["time_to_target_s"] is None, r["time_to_target_s"] or 0))
            body = [[r["row"], "never" if r["time_to_target_s"] is None else f"{r['time_to_target_s']:.1f}",
                     pct(r["best_val_accuracy"]), pct(r["test_accuracy"]), f"{r['samples_per_second']:,.0f}",
                     ms(r["stage1_latency_ms"]["p50"]) if r.get("stage1_latency_ms") else "",
                     f"{max(r['peak_rss_mb']):.0f}" if r.get("peak_rss_mb") else ""] for r in runs]
            failed = [f"{f['row']} ({f['error']})" for f in result["failed"]
                      if f["stages"] == k and f["delay_ms"] == d]
            out += [f"**{k} stages, {d:g} ms per link**: {board['first']} first, {board['factor']:.2f}x sooner than "
                    f"{board['next']}; the highest target every row reached: {pct(board['reached_by_all'])}."
                    + (f" Failed: {', '.join(failed)}." if failed else ""), "",
                    *table(["row", f"s to {pct(p['target'])}", "best validation", "test", "samples/s",
                            "stage-1 p50 ms", "peak RSS MB (largest stage)"],
                           ["---", "---:", "---:", "---:", "---:", "---:", "---:"], body)]
    return out


def conv_section(rows: list[dict], speed: dict, latency: dict) -> list[str]:
    diff = versus_backprop(rows, "epochs")
    body = [[str(r["epochs"]), r["mode"], pct(r["test_accuracy"]), pp(diff[id(r)]) if id(r) in diff else "",
             f"{r['samples_per_second']:,.0f}", ms(r["stage1_p50_ms"]),
             " / ".join(f"{r['peak_rss_mb'][k]:.0f}" for k in sorted(r["peak_rss_mb"], key=int))] for r in rows]
    fast = [[f"{'x'.join(map(str, s['input']))} -> {s['filters']}", ms(s["ours_ms"]), ms(s["torch_ms"]),
             f"{s['ratio']:.2f}x"] for s in speed["stages"]]
    t, rss = latency["throughput"], ", ".join(f"{s['peak_rss_mb']:.0f}" for s in latency["runs"][0]["stages"])
    return ["## Conv stages", "",
            f"`--conv {rows[0]['conv']}` on MNIST (sizes {rows[0]['sizes']}), seed 0, "
            "each mode one run after another ([training.md](training.md#conv-stages)); stage-1 update latency p50 "
            "and each stage's peak RSS (MB) from the same runs, on a machine other jobs shared: read the ratios.", "",
            *table(["epochs", "mode", "test", "against backprop", "samples/s", "stage-1 p50 ms", "peak RSS MB, stages"],
                   ["---:", "---", *["---:"] * 5], body), *sources(["conv.json"], rows),
            f"A conv stage's forward + backward, batch {speed['batch']}, 1 thread, against PyTorch {speed['torch']}'s "
            f"CPU conv on the same shapes (median of {speed['repeats']}, in alternation; {machine(speed)}):", "",
            *table(["stage (input -> filters)", "ours ms", "PyTorch ms", "ours / PyTorch"], ["---", *["---:"] * 3],
                   fast), *targets(speed),
            f"`dni bench latency --conv {latency['params']['conv']}` ({machine(latency)}): the "
            f"{t['depth']}-stage conv dni run made {t['fraction_of_ideal']:.2f} of the 2-core ideal "
            f"({t['pipeline_samples_per_second']:,.0f} against {t['ideal_samples_per_second']:,.0f} samples/s); the "
            f"CPU it spent would allow {t['cpu_bound_fraction']:.2f}. Peak RSS by stage (MB): {rss}.", "",
            *sources(["conv-speed.json", "conv-latency.json"], [speed, latency])]


def load(name: str):
    return json.loads((RESULTS / name).read_text())


def render() -> str:
    lines = ["# Results", "",
             "<!-- Generated by benchmarks/results_page.py from docs/results/*.json: edit those, not this page. -->",
             "",
             "What the defaults reach, measured. Why the defaults are what they are: [defaults.md](defaults.md);",
             "recurrent results: [recurrent.md](recurrent.md#measured); `dni bench latency` and `transport`:",
             "[benchmarks.md](benchmarks.md); the sweeps and runs on the way: [lab/](lab/README.md).", "",
             *depth_section(load("depth.json")), *harder_section(load("harder.json")),
             *network_section(load("network.json")),
             *recurrent_section([load(name) for name in SEQMNIST], load("copy.json")),
             *race_section([(name, load(name)) for name in RACES]),
             *bench_section(load("latency.json"), load("transport.json")),
             *conv_section(load("conv.json"), load("conv-speed.json"), load("conv-latency.json")),
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
