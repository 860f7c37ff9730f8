"""The figure of `dni bench network`: latency, samples/s and accuracy against link delay, and the projection."""
from __future__ import annotations

from coordinator.bench.netlab.runs import find
from coordinator.bench.plot import require, save

COLOURS = {"dni": "tab:blue", "cdni": "tab:green", "backprop": "tab:red", "gpipe": "tab:orange",
           "pipedream": "tab:brown"}
STYLES = ("o-", "s--", "^:", "v-.", "d-")


def draw(result: dict, path: str) -> None:
    plt = require()
    p = result["params"]
    # The first credit scheme's figures (`--credits`); the side-by-side table has both.
    credit = p.get("credits", [None])[0]
    runs, accuracy, hosts = ([x for x in xs if x.get("credit", credit) == credit]
                             for xs in (result["runs"], result["accuracy"], result["projection"]["hosts"]))
    fig, ((lat, sps), (acc, proj)) = plt.subplots(2, 2, figsize=(12, 9))
    delays = p["delays"]
    for mode in p["modes"]:
        for style, k in zip(STYLES, p["stages"]):
            got = [find(runs, mode=mode, stages=k, delay_ms=d, window=p["window"]) for d in delays]
            if all(got):
                lat.plot(delays, [r["stage1_latency_ms"]["p50"] for r in got], style, color=COLOURS[mode],
                         label=f"{mode} K={k}")
                sps.plot(delays, [r["samples_per_second"] for r in got], style, color=COLOURS[mode],
                         label=f"{mode} K={k} w{p['window']}")
    for style, k in zip(STYLES, p["stages"]):
        got = [find(runs, mode="dni", stages=k, delay_ms=d, window=p["throughput_window"]) for d in delays]
        if all(got):
            sps.plot(delays, [r["samples_per_second"] for r in got], style, color="tab:purple",
                     label=f"dni K={k} w{p['throughput_window']}")
    lat.set(xlabel="link delay, one way (ms)", ylabel="stage-1 update latency p50 (ms)", yscale="log",
            title="stage-1 update latency (measured)")
    sps.set(xlabel="link delay, one way (ms)", ylabel="samples/s", yscale="log", title="throughput (measured)")
    for mode, marker in (("cdni", "o"), ("dni", "s")):
        windows = sorted({a["window"] for a in accuracy if a["mode"] == mode})
        for i, w in enumerate(windows):
            pts = sorted((a["delay_ms"], a["test_accuracy"]) for a in accuracy
                         if a["mode"] == mode and a["window"] == w)
            acc.plot([d for d, _ in pts], [a * 100 for _, a in pts], marker + "-", color=COLOURS[mode],
                     alpha=0.35 + 0.65 * (i + 1) / len(windows), label=f"{mode} window {w}")
    acc.set(xlabel="link delay, one way (ms)", ylabel="test accuracy (%)",
            title=f"accuracy after {p['epochs']} epochs, K={p['focus_stages']}")
    for mode, window in [(m, p["window"]) for m in p["modes"]] + [("dni", p["throughput_window"])]:
        for style, d in zip(STYLES, delays):
            pts = [v for v in hosts if v["mode"] == mode and v["window"] == window
                   and v["delay_ms"] == d]
            if pts:
                proj.plot([v["stages"] for v in pts], [v["samples_per_second"] for v in pts], style,
                          color="tab:purple" if window != p["window"] else COLOURS[mode],
                          label=f"{mode} w{window} {d:g} ms")
    proj.set(xlabel="stages, one host each", ylabel="samples/s", yscale="log",
             title="PROJECTION from measured costs (not measured)")
    for ax in (lat, sps, acc, proj):
        ax.legend(fontsize=7, ncol=2)
    m = result["machine"]
    save(plt, fig, path, f"dni bench network: {m['cpus']} cpus shared by every process; delay by {result['delay_by']}; "
         f"CURVE {'off' if p['insecure'] else 'on'}; libzmq {m['libzmq']}"
         + (f"; {credit} credit" if credit else ""))
