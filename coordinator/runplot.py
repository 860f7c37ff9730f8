"""`dni plot RUN_DIR [RUN_DIR ...]`: one PNG of one or more runs overlaid, from metrics.jsonl and summary.json.

Top row: test accuracy per epoch, training loss over steps, update-latency distribution per
stage. Then one row per stage with a synthesizer: the synthetic gradient's cosine to its
target, the synthesizer's loss and the staleness of its targets, over steps. Runs differ by
line style, stages by colour.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

HINT = "dni plot needs matplotlib: pip install -e '.[plot]'"
STYLES = ("-", "--", ":", "-.")


def metrics_file(run_dir: str | Path) -> Path:
    """The run's metrics.jsonl; FileNotFoundError in one line if it is not a run directory."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (is it a dni run directory?)")
    return path


def load_run(run_dir: str | Path) -> dict:
    """{'name', 'summary', 'series': {stage: {key: (steps, values)}}} of one run directory."""
    run_dir = Path(run_dir)
    summary_path, metrics_path = run_dir / "summary.json", metrics_file(run_dir)
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    raw: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    with open(metrics_path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue   # a run cut short may end in half a line
            stage, step = rec.get("stage"), rec.get("step")
            if not isinstance(stage, int) or not isinstance(step, int):
                continue
            for key in ("latency_ms", "loss", "cos", "synth_loss", "staleness"):
                if isinstance(rec.get(key), (int, float)):
                    raw[stage][key].append((step, float(rec[key])))
    series = {stage: {k: tuple(np.array(c) for c in zip(*sorted(v))) for k, v in keys.items()}
              for stage, keys in raw.items()}
    name = f"{run_dir.name} ({summary.get('mode', '?')}, {summary.get('stages', '?')} stages)"
    return {"name": name, "summary": summary, "series": series}


def smooth(values: np.ndarray, points: int = 150) -> np.ndarray:
    """A moving average over about len/points steps, so a long run stays readable."""
    w = max(1, len(values) // points)
    if w == 1:
        return values
    return np.convolve(values, np.ones(w) / w, mode="valid")


def _line(ax, steps, values, **kw):
    v = smooth(values)
    ax.plot(steps[len(steps) - len(v):], v, **kw)


def draw(run_dirs: list[str], path: str) -> list[str]:
    """Draw the runs into one PNG at path; returns the panel titles (tests check every one is there)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [load_run(d) for d in run_dirs]
    synth_stages = sorted({s for r in runs for s, keys in r["series"].items() if "cos" in keys})
    rows = 1 + max(1, len(synth_stages))
    fig, axes = plt.subplots(rows, 3, figsize=(15, 3.2 * rows), squeeze=False)
    colours = plt.get_cmap("viridis")
    all_stages = sorted({s for r in runs for s in r["series"]})
    colour = {s: colours(i / max(1, len(all_stages) - 1) * 0.9) for i, s in enumerate(all_stages)}
    titles = []

    def title(ax, text):
        ax.set_title(text, fontsize=10)
        titles.append(text)

    acc, loss, lat = axes[0]
    for i, r in enumerate(runs):
        ls = STYLES[i % len(STYLES)]
        hist = r["summary"].get("history", [])
        if hist:
            acc.plot([h["epoch"] for h in hist], [100 * h["test_accuracy"] for h in hist], ls, marker="o",
                     label=r["name"])
        for stage, keys in sorted(r["series"].items()):
            if "loss" in keys:
                _line(loss, *keys["loss"], linestyle=ls, color="black", label=r["name"])
            if "latency_ms" in keys:
                ms = np.sort(keys["latency_ms"][1])
                lat.plot(ms, np.arange(1, len(ms) + 1) / len(ms), linestyle=ls, color=colour[stage],
                         label=f"stage {stage}" if i == 0 else None)
    title(acc, "test accuracy per epoch (%)")
    acc.set_xlabel("epoch")
    acc.legend(fontsize=7)
    title(loss, "training loss (head, smoothed)")
    loss.set_xlabel("step")
    loss.set_yscale("log")
    title(lat, "update latency per stage (CDF)")
    lat.set_xscale("log")
    lat.set_xlabel("ms")
    lat.legend(fontsize=7)

    for row, stage in enumerate(synth_stages or [None], start=1):
        cos_ax, sl_ax, st_ax = axes[row]
        for i, r in enumerate(runs):
            keys = r["series"].get(stage, {})
            kw = {"linestyle": STYLES[i % len(STYLES)], "color": colour.get(stage, "black")}
            if "cos" in keys:
                _line(cos_ax, *keys["cos"], **kw)
                _line(sl_ax, *keys["synth_loss"], **kw)
                if "staleness" in keys:
                    _line(st_ax, *keys["staleness"], **kw)
        label = f"stage {stage}" if stage is not None else "no synthesizer in these runs"
        title(cos_ax, f"{label}: cosine of synthetic gradient to target")
        cos_ax.set_ylim(-1, 1)
        cos_ax.axhline(0, color="grey", lw=0.5)
        title(sl_ax, f"{label}: synthesizer loss (per element; 0.5 = predicting 0)")
        sl_ax.set_yscale("symlog", linthresh=1e-2)
        title(st_ax, f"{label}: staleness (updates)")
        for ax in axes[row]:
            ax.set_xlabel("step")
    fig.suptitle("  |  ".join(f"{STYLES[i % len(STYLES)]} {r['name']}" for i, r in enumerate(runs)), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return titles


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="one PNG of run directories overlaid: accuracy, loss, synthesizers, latency")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="", help="PNG path (default: RUN_DIR/plot.png of the first run)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args) -> int:
    import sys
    for d in args.run_dirs:   # what is wrong with the input first, whether or not matplotlib is there
        metrics_file(d)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(HINT, file=sys.stderr)
        return 2
    out = args.out or str(Path(args.run_dirs[0]) / "plot.png")
    draw(args.run_dirs, out)
    print(f"plot written to {out}")
    return 0
