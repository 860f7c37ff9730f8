"""`dni plot RUN_DIR [RUN_DIR ...]`: one PNG of one or more runs overlaid, from metrics.jsonl and summary.json.

Top row: test accuracy per epoch, training loss over steps, update-latency distribution per
stage and, for runs with --eval-every, validation accuracy against training seconds. Then one
row per stage with a synthesizer: the synthetic gradient's cosine to its target, the
synthesizer's loss and the staleness of its targets, over steps. Runs differ by line style,
stages by colour.
"""
from __future__ import annotations

import sys
from pathlib import Path

from coordinator.plotdata import load_run, metrics_file

HINT = "dni plot needs matplotlib: pip install -e '.[plot]'"
STYLES = ("-", "--", ":", "-.")


def draw(run_dirs: list[str], path: str) -> list[str]:
    """Draw the runs into one PNG at path; returns the panel titles (tests check every one is there)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [load_run(d) for d in run_dirs]
    for note in (n for r in runs for n in r["notes"]):
        print(f"dni plot: {note}", file=sys.stderr)
    synth_stages = sorted({s for r in runs for s, keys in r["series"].items() if "cos" in keys})
    rows = 1 + max(1, len(synth_stages))
    validated = [r for r in runs if "val_accuracy" in r["series"].get(0, {})]
    columns = 3 + bool(validated)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.2 * rows), squeeze=False)
    colours = plt.get_cmap("viridis")
    all_stages = sorted({s for r in runs for s in r["series"]})
    colour = {s: colours(i / max(1, len(all_stages) - 1) * 0.9) for i, s in enumerate(all_stages)}
    titles = []

    def title(ax, text):
        ax.set_title(text, fontsize=10)
        titles.append(text)

    acc, loss, lat = axes[0][:3]
    for i, r in enumerate(runs):
        ls = STYLES[i % len(STYLES)]
        if r["history"]:
            acc.plot([e for e, _ in r["history"]], [100 * a for _, a in r["history"]], ls, marker="o",
                     label=r["name"])
        for stage, keys in sorted(r["series"].items()):
            if "loss" in keys:
                loss.plot(*keys["loss"], linestyle=ls, color="black", label=r["name"])
            if stage in r["latency"]:
                lat.plot(*r["latency"][stage].cdf(), linestyle=ls, color=colour[stage],
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
    if validated:
        val = axes[0][3]
        for i, r in enumerate(runs):
            if r in validated:
                keys = r["series"][0]
                val.plot(keys["train_seconds"][1], 100 * keys["val_accuracy"][1], STYLES[i % len(STYLES)],
                         marker=".", label=r["name"])
        title(val, "validation accuracy (%) against training seconds")
        val.set_xlabel("s (the clock paused while evaluating)")
        val.legend(fontsize=7)
        for ax in axes[1:, 3]:
            ax.axis("off")

    for row, stage in enumerate(synth_stages or [None], start=1):
        cos_ax, sl_ax, st_ax = axes[row][:3]
        for i, r in enumerate(runs):
            keys = r["series"].get(stage, {})
            kw = {"linestyle": STYLES[i % len(STYLES)], "color": colour.get(stage, "black")}
            for ax, key in ((cos_ax, "cos"), (sl_ax, "synth_loss"), (st_ax, "staleness")):
                if key in keys:
                    ax.plot(*keys[key], **kw)
        label = f"stage {stage}" if stage is not None else "no synthesizer in these runs"
        title(cos_ax, f"{label}: cosine of synthetic gradient to target")
        cos_ax.set_ylim(-1, 1)
        cos_ax.axhline(0, color="grey", lw=0.5)
        title(sl_ax, f"{label}: synthesizer loss (per element; 0.5 = predicting 0)")
        sl_ax.set_yscale("symlog", linthresh=1e-2)
        title(st_ax, f"{label}: staleness (updates)")
        for ax in (cos_ax, sl_ax, st_ax):
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
    for d in args.run_dirs:   # what is wrong with the input first, whether or not matplotlib is there
        metrics_file(d)
    out = args.out or str(Path(args.run_dirs[0]) / "plot.png")
    if not Path(out).parent.is_dir():   # before reading what may be gigabytes of metrics
        raise FileNotFoundError(f"--out {out}: no directory {Path(out).parent}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(HINT, file=sys.stderr)
        return 2
    draw(args.run_dirs, out)
    print(f"plot written to {out}")
    return 0
