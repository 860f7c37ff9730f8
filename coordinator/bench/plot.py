"""PNG figures of benchmark results, through the optional `plot` extra (matplotlib)."""
from __future__ import annotations

COLOURS = {"dni": "tab:blue", "backprop": "tab:red", "project": "tab:blue", "raw": "tab:grey"}
# Stage 1's time, bottom to top; wait is split into blocked on the gradient and the rest.
SHARES = (("compute", "tab:blue"), ("synth", "tab:cyan"), ("send", "tab:orange"), ("receive", "tab:brown"),
          ("blocked", "tab:red"), ("wait, not blocked", "salmon"), ("idle", "lightgrey"), ("other", "black"))


def require():
    """The pyplot module, or an ImportError that says how to get it."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install -e .[plot]") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    return plt


def draw(result: dict, path: str) -> None:
    plt = require()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    (latency if result["bench"] == "latency" else transport)(result, axes)
    m = result["machine"]
    save(plt, fig, path, f"{m['cpus']} cpus, BLAS {m['blas'].get('kernel', '?')} x{m['blas'].get('threads', '?')} "
         f"thread, libzmq {m['libzmq']}, pyzmq {m['pyzmq']}")


def save(plt, fig, path: str, footnote: str) -> None:
    """The machine under the panels, then the PNG."""
    fig.suptitle(footnote, fontsize=9, y=0.01, va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency(result: dict, axes) -> None:
    ax, bars = axes
    p = result["params"]
    for mode in ("dni", "backprop"):
        runs = sorted((r for r in result["runs"] if r["mode"] == mode), key=lambda r: r["depth"])
        depths = [r["depth"] for r in runs]
        ax.plot(depths, [r["stages"][0]["latency_ms"]["p50"] for r in runs], "o-", color=COLOURS[mode],
                label=f"{mode} p50")
        ax.plot(depths, [r["stages"][0]["latency_ms"]["p99"] for r in runs], "v:", color=COLOURS[mode],
                label=f"{mode} p99")
    ax.axhline(result["isolated_stage1"]["update_ms"]["p50"], color="black", lw=0.8, ls="--",
               label="stage 1 alone in one process")
    ax.set(xlabel="stages (processes)", ylabel="stage-1 update latency (ms)", yscale="log",
           xticks=p["depths"], title=f"update latency, width {p['width']}, batch {p['batch']}")
    ax.legend(fontsize=8)
    # Where stage 1's time goes, per mode and depth.
    runs = sorted(result["runs"], key=lambda r: (r["depth"], r["mode"]))
    bottom = [0.0] * len(runs)
    for share, colour in SHARES:
        values = [share_of(r["stages"][0]["time_fraction"], share) for r in runs]
        bars.bar(range(len(runs)), values, bottom=bottom, color=colour, label=share)
        bottom = [b + v for b, v in zip(bottom, values)]
    bars.set_xticks(range(len(runs)), [f"{r['mode']}\n{r['depth']}" for r in runs], fontsize=8)
    bars.set(ylabel="share of stage 1's time", ylim=(0, 1), title="where stage 1's time goes")
    bars.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))


def share_of(fraction: dict, share: str) -> float:
    return fraction["wait"] - fraction["blocked"] if share == "wait, not blocked" else fraction[share]


def transport(result: dict, axes) -> None:
    ax, ratio = axes
    for t, style in zip(result["transports"], ("-", "--")):
        kib = [s["kib"] for s in t["sizes"]]
        for path in ("project", "raw"):
            ax.plot(kib, [s[path]["rtt_us"]["p50"] for s in t["sizes"]], "o" + style, color=COLOURS[path],
                    label=f"{path} {t['transport']} p50")
        ratio.plot(kib, [s["overhead"]["rtt_p50_ratio"] for s in t["sizes"]], "o" + style, color="tab:blue",
                   label=f"round trip p50, {t['transport']}")
        ratio.plot(kib, [s["overhead"]["stream_ratio"] for s in t["sizes"]], "s" + style, color="tab:green",
                   label=f"streaming msgs/s, {t['transport']}")
    ax.set(xscale="log", yscale="log", xlabel="message size (KiB)", ylabel="round trip (µs)",
           title="one hop and back: the project's messages vs raw pyzmq")
    ax.legend(fontsize=8)
    ratio.axhline(1.0, color="black", lw=0.8)
    ratio.axhline(1.1, color="tab:blue", lw=0.8, ls=":", label="round-trip target (at most)")
    ratio.axhline(0.9, color="tab:green", lw=0.8, ls=":", label="streaming target (at least)")
    ratio.set(xscale="log", xlabel="message size (KiB)", ylabel="project / raw",
              title="ratio (1 = no overhead)")
    ratio.legend(fontsize=8)
