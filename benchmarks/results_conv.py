"""The conv stages' section of docs/results.md: accuracy by mode, speed against PyTorch, the pipeline's share and
memory."""
from results_parts import machine, ms, pct, pp, sources, table, targets, versus_backprop


def net(row: dict) -> str:
    """The conv stages a row trained: --conv and --pool (rows from before --pool took a list: 2)."""
    return f"{row['conv']}, pool {row.get('pool', '2')}"


def conv_section(rows: list[dict], speed: dict, latency: dict) -> list[str]:
    """Accuracy of the conv nets by mode, a conv stage's speed against PyTorch, the pipeline's share of the ideal."""
    rows = [{**r, "group": (net(r), r["epochs"])} for r in rows]
    diff = versus_backprop(rows, "group")
    body = [[net(r), str(r["epochs"]), " ".join([r["mode"], *([f"`{r['flags']}`"] if r.get("flags") else [])]),
             pct(r["test_accuracy"]), pp(diff[id(r)]) if id(r) in diff else "",
             f"{r['samples_per_second']:,.0f}", ms(r["stage1_p50_ms"]),
             " / ".join(f"{r['peak_rss_mb'][k]:.0f}" for k in sorted(r["peak_rss_mb"], key=int))] for r in rows]
    fast = [[f"{'x'.join(map(str, s['input']))} -> {s['filters']}", ms(s["ours_ms"]), ms(s["torch_ms"]),
             f"{s['ratio']:.2f}x", ms(s["gemm_ms"]), f"{ms(s['ours_wall_ms'])} / {ms(s['torch_wall_ms'])}"]
            for s in speed["stages"]]
    return ["## Conv stages", "",
            "The conv nets (`--conv`, `--pool`) on MNIST, then `--hidden 256` and the head, seed 0, each mode one "
            "run after another ([training.md](training.md#conv-stages)); stage-1 update latency p50 and each "
            "stage's peak RSS (MB) from the same runs, on a machine other jobs shared: read the ratios.", "",
            *table(["conv, pool", "epochs", "mode", "test", "against backprop", "samples/s", "stage-1 p50 ms",
                    "peak RSS MB, stages"], ["---", "---:", "---", *["---:"] * 5], body),
            *sources(["conv.json"], rows),
            f"A conv stage's forward + backward, batch {speed['batch']}, 1 thread, against PyTorch {speed['torch']}'s "
            f"CPU conv on the same shapes: CPU time, median of {speed['repeats']}, in alternation (the wall times "
            f"beside count the waits for a core on the shared machine; {machine(speed)}). Our GEMMs alone (the "
            "forward's, the weight gradient's, the input gradient's, at their shapes) bound what the rest "
            "(im2col, the input gradient's windows and additions, pooling) may add:", "",
            *table(["stage (input -> filters)", "ours ms", "PyTorch ms", "ours / PyTorch", "our GEMMs alone ms",
                    "wall ms, ours / PyTorch"], ["---", *["---:"] * 5], fast), *targets(speed),
            *pipeline_lines(latency), *sources(["conv-speed.json", "conv-latency.json"], [speed, latency])]


def pipeline_lines(latency: dict) -> list[str]:
    """The conv dni pipeline's share of the 2-core ideal, where its arithmetic goes, and each stage's memory."""
    t, stages = latency["throughput"], latency["runs"][0]["stages"]
    work = [sum(s["time_s"]["main_cpu"][c] for c in ("compute", "synth")) for s in stages]
    shares = [w / sum(work) for w in work]
    memory = [[str(r["stage"]) + (" (conv)" if r["conv"] else ""), f"{r['weights_mb']:.2f}", str(r.get("held") or "-"),
               f"{r['inflight_mb']:.1f}", f"{r['bound_mb']:.1f}", f"{r['start_rss_mb']:.0f}", f"{r['growth_mb']:.0f}",
               f"{r['peak_rss_mb']:.0f}"] for r in latency["memory"]]
    return [f"`dni bench latency --conv {latency['params']['conv']}` ({machine(latency)}): the "
            f"{t['depth']}-stage conv dni run made {t['fraction_of_ideal']:.2f} of the 2-core ideal "
            f"(median of {t['repeats']} pairs; {t['pipeline_samples_per_second']:,.0f} against "
            f"{t['ideal_samples_per_second']:,.0f} samples/s); the CPU it spent would allow "
            f"{t['cpu_bound_fraction']:.2f}. Its stages' shares of the arithmetic (compute and synthesizer, CPU): "
            + ", ".join(f"{pct(x)}" for x in shares) + f": with one stage doing {pct(max(shares))} of the work, two "
            f"cores can make at most {min(1.0, 1 / (2 * max(shares))):.2f} of the ideal.", "",
            "Memory by stage (MB) in the dni run: the bound is 4x the weights (layer and synthesizer) plus the "
            "activations in flight (`--window` batches of the stage's input rows, and of each batch it held at once "
            "its output, M's prediction and the pooling's argmax; held: the most batches it held, as its worker "
            "counted them; - : none kept past the update, `--window` batches of its output), held against the "
            "growth of the worker's RSS from its start (the process's baseline, no stage yet) to its peak:", "",
            *table(["stage", "weights", "held", "in flight", "bound", "start", "growth", "peak RSS"],
                   ["---", *["---:"] * 7], memory),
            *targets({"targets": [x for x in latency["targets"] if "peak RSS" in x["name"]]})]
