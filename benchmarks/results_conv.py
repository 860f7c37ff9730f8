"""The conv stages' section of docs/results.md: accuracy by mode, speed against PyTorch, the pipeline's share."""
from results_parts import machine, ms, pct, pp, sources, table, targets, versus_backprop


def conv_section(rows: list[dict], speed: dict, latency: dict) -> list[str]:
    """Accuracy of the conv net by mode, a conv stage's speed against PyTorch, the pipeline's share of the ideal."""
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
