"""The race's sections of docs/results.md (the tuning of its rows, each run's tables) and the README's race table."""
from results_parts import machine, ms, pct, sources, table

PIPELINES, OURS = ("gpipe", "pipedream"), ("dni", "cdni")   # the modes the README's table sets against each other


def mode(run: dict) -> str:
    """The mode a run trained in: its last --mode flag (dni run's default, cdni, without one)."""
    at = [i for i, f in enumerate(run["flags"]) if f == "--mode"]
    return run["flags"][at[-1] + 1] if at else "cdni"


def setting_runs(result: dict, k: int, d: float) -> list[dict]:
    """The runs of one depth and delay; the single process (no links) in every delay's."""
    return [r for r in result["runs"] if r["stages"] == k and (r["delay_ms"] == d or r["single_process"])]


def soonest(runs: list[dict], modes: tuple[str, ...]) -> dict | None:
    """The run of these modes that reached the target first (None: none did)."""
    reached = [r for r in runs if not r["single_process"] and mode(r) in modes and r["time_to_target_s"] is not None]
    return min(reached, key=lambda r: r["time_to_target_s"], default=None)


def seconds(r: dict | None) -> str:
    return "never" if r is None or r["time_to_target_s"] is None else f"{r['time_to_target_s']:.1f} s"


def verdict(pipe: dict | None, ours: dict | None) -> str:
    if ours is None or pipe is None:
        return "dni only" if pipe is None and ours else "pipeline only" if ours is None and pipe else "neither"
    factor = pipe["time_to_target_s"] / max(ours["time_to_target_s"], 1e-9)
    return f"**dni {factor:.2f}x sooner**" if factor >= 1 else f"pipeline {1 / factor:.2f}x sooner"


def headline(results: list[tuple[str, dict]]) -> list[str]:
    """The README's race table: per network, depth and delay, the soonest pipeline against the soonest dni/cdni."""
    body, notes = [], []
    for name, result in results:
        p = result["params"]
        net = f"conv {','.join(map(str, p['conv']))}" if p.get("conv") else f"MLP {p['width']}"
        notes.append(f"[{name}](docs/results/{name}): {net}, target {pct(p['target'])}, {machine(result)}")
        for board in result["settings"]:
            k, d = board["stages"], board["delay_ms"]
            runs = setting_runs(result, k, d)
            pipe, ours = soonest(runs, PIPELINES), soonest(runs, OURS)
            single = next((r for r in runs if r["single_process"]), None)
            body.append([net, str(k), f"{d:g}", pipe and f"{pipe['row']} {seconds(pipe)}" or "never",
                         ours and f"{ours['row']} {seconds(ours)}" or "never", verdict(pipe, ours),
                         "" if single is None else seconds(single), board["first"] or "none"])
    return [*table(["network", "stages", "ms per link", "soonest pipeline to target", "soonest dni/cdni",
                    "dni against the pipelines", "one process", "first of all"],
                   ["---", "---:", "---:", "---", "---", "---", "---:", "---"], body),
            "Time to the target validation accuracy, training seconds with evaluations paused; "
            + "; ".join(notes) + ".", ""]


def tuning_section(name: str, result: dict) -> list[str]:
    """Every try of `dni bench race --tune`: what each reached on the validation split, and the one kept."""
    p, body = result["params"], []
    for row, entry in result["tuning"].items():
        for flags, t in entry["tries"].items():
            body.append([row, f"`{flags}`", f"{t['reached']}/{t['runs']}",
                         "" if t["seconds_to_target"] is None else f"{t['seconds_to_target']:.1f}",
                         "" if t["mean_best_val_accuracy"] is None else pct(t["mean_best_val_accuracy"]),
                         "kept" if flags == entry["flags"] else ""])
    depths = ", ".join(str(k) for k in p["stages"])
    delays = ", ".join(f"{d:g}" for d in p["delays"])
    return ["## Tuning the race's rows: the same budget for every row", "",
            "`dni bench race --tune` ([benchmarks.md](benchmarks.md#dni-bench-race-time-to-accuracy)): three",
            "settings of every row, each raced on the validation split only, at "
            f"{depths} stages and {delays} ms per link ({p['train_subset']:,} training images, {p['epochs']}",
            f"epoch(s), target {pct(p['target'])}). Kept: the most settings reaching the target, then the least",
            f"time to it summed over them, then the highest mean best validation accuracy. {machine(result)}.", "",
            *table(["row", "flags", "reached", "s to target (sum)", "mean best validation", ""],
                   ["---", "---", "---:", "---:", "---:", "---"], body),
            *sources([name], [result])]


def race_section(results: list[tuple[str, dict]]) -> list[str]:
    """One table per (stages, delay) of every race run: the rows by time to target, the first and by what factor."""
    out = ["## The race: time to accuracy", "",
           "`dni bench race` ([benchmarks.md](benchmarks.md#dni-bench-race-time-to-accuracy)): the same network",
           "trained by each row on the same processes and links, validation accuracy every `--eval-every` batches",
           "with the clock paused, the test set read once at the end. Each run's rows are printed with it (`rows`",
           "in its JSON): race-reduced.json, the first race, ran defaults and untuned slow-link settings on 20,000",
           "images; race-taken.json measured `--credit taken` beside pipedream and cdni; race.json is the race at",
           "its budget (one epoch of 50,000 images to 90%) with the rows of `ROWS` in coordinator/bench/race.py but",
           "dni-link, each fed by stage 1 itself (`--feeds stage`: ROW@stage) but the single process;",
           "race-feed.json races three rows fed by the coordinator and by stage 1 itself (`--feeds`, below);",
           "race-feed-noahead.json is the same bench run before the coordinator fed stage 1 ahead of its credit;",
           "race-conv.json races the conv net (`--conv 32,64 --stages 4`: two conv stages, a dense one, the head)",
           "across the network lab at 0, 5 and 20 ms, and race-conv-gpipe-dni.json its gpipe and dni rows beside",
           "pipedream at 0 and 20 ms (a later run); race-window.json races cdni-taken at windows 2, 3, 4 and 8",
           "beside pipedream at 6 stages and 20 ms (what a wider window buys in pace and costs in samples).", ""]
    for name, result in results:
        p = result["params"]
        images = f"first {p['train_subset']:,}" if p["train_subset"] else "50,000"
        net = f"the conv net ({','.join(map(str, p['conv']))} filters, then)" if p.get("conv") else ""
        out += [f"From [results/{name}](results/{name}): {net}{' ' if net else ''}{p['width']}-wide hidden layers "
                f"on MNIST's {images} training images, {p['epochs']} epoch(s), target {pct(p['target'])}, "
                f"validation every {p['eval_every']} batches; links through the {result['where']}. "
                f"{machine(result)}: read the ratios, not the rates."
                + (f" Assembled from {result['assembled']}." if result.get("assembled") else ""), ""]
        for board in result["settings"]:
            k, d = board["stages"], board["delay_ms"]
            # the single process has no links: its one run stands in every delay's table
            runs = sorted(setting_runs(result, k, d),
                          key=lambda r: (r["time_to_target_s"] is None, r["time_to_target_s"] or 0))
            body = [[r["row"], "never" if r["time_to_target_s"] is None else f"{r['time_to_target_s']:.1f}",
                     "" if r["samples_to_target"] is None else f"{r['samples_to_target']:,}",
                     pct(r["best_val_accuracy"]), pct(r["test_accuracy"]), f"{r['samples_per_second']:,.0f}",
                     ms(r["stage1_latency_ms"]["p50"]) if r.get("stage1_latency_ms") else "",
                     f"{max(r['peak_rss_mb']):.0f}" if r.get("peak_rss_mb") else ""] for r in runs]
            failed = [f"{f['row']} ({f['error']})" for f in result["failed"]
                      if f["stages"] == k and f["delay_ms"] == d]
            lead = "no row reached the target" if board["first"] is None else f"{board['first']} first" + (
                f", {board['factor']:.2f}x sooner than {board['next']}" if board["next"] else ", the only one")
            out += [f"**{k} stages, {d:g} ms per link**: {lead}; the highest target every row reached: "
                    f"{pct(board['reached_by_all'])}." + (f" Failed: {', '.join(failed)}." if failed else ""), "",
                    *table(["row", f"s to {pct(p['target'])}", "samples to it", "best validation", "test",
                            "samples/s", "stage-1 p50 ms", "peak RSS MB (largest stage)"],
                           ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:"], body)]
    return out


STAGE_FED = "@stage"   # the name's tail of a row fed by stage 1 itself (dni bench race --feeds)


def feed_section(name: str, result: dict) -> list[str]:
    """Each row fed by the coordinator against the same row fed by stage 1 (--feed stage), in the same run."""
    runs = {(r["row"], r["stages"], r["delay_ms"]): r for r in result["runs"]}
    body = []
    for (row, k, d), read in runs.items():
        fed = runs.get((row.removesuffix(STAGE_FED), k, d))
        if not row.endswith(STAGE_FED) or fed is None:
            continue
        sooner = fed["time_to_target_s"] / read["time_to_target_s"] if fed["time_to_target_s"] and \
            read["time_to_target_s"] else None
        rates = fed["samples_per_second"], read["samples_per_second"]
        body.append([str(k), f"{d:g}", fed["row"], f"{rates[0]:,.0f}", f"{rates[1]:,.0f}", f"{rates[1] / rates[0]:.2f}",
                     seconds(fed), seconds(read), "" if sooner is None else f"{sooner:.2f}",
                     f"{fed['samples_to_target'] or '-'} / {read['samples_to_target'] or '-'}"])
    return ["## Stage 1 reads its own data: `--feed stage`", "",
            "`dni bench race --feeds coordinator,stage` ([benchmarks.md](benchmarks.md#stage-1-reads-its-own-data)):",
            "each row as the coordinator feeds it, and again with stage 1 reading the training set itself",
            "(`dni run --feed stage`: the coordinator sends each batch's example indices), one after the other in",
            f"one run, so that the ratios are measured side by side. {machine(result)}.", "",
            *table(["stages", "ms per link", "row", "samples/s fed", "samples/s read", "rate x",
                    f"s to {pct(result['params']['target'])} fed", "read", "sooner x", "samples to target fed / read"],
                   ["---:", "---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:"], body),
            *sources([name], [result])]
