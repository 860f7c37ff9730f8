"""The conv stages' synthesizer section of docs/results.md: why cdni trails backprop, the candidates tried."""
from results_parts import ms, pct, sources, table


def cosines(by_stage: dict) -> str:
    return " / ".join(f"{by_stage[k]:.2f}" for k in sorted(by_stage, key=int))


def five_epochs(run: dict, conv_rows: list[dict]) -> str:
    """A candidate run as long as the conv stages' table's, against its rows of the same epochs."""
    # the default net's rows at the defaults (the 4-conv-stage net's and a candidate's own rows set apart)
    same = {r["mode"]: pct(r["test_accuracy"]) for r in conv_rows if not r.get("flags")
            and (r["conv"], r.get("pool", "2"), r["epochs"]) == ("32,64", "2", run["epochs"])}
    return (f"{run['epochs']} epochs on the whole training set, {run['candidate']} (`{run['command']}`): test "
            f"{pct(run['test_accuracy'])}, cosine {cosines(run['synth_cosine'])}; at the defaults cdni reached "
            f"{same['cdni']} and backprop {same['backprop']} (the conv stages' table above).")


def ceiling_part(ceiling: dict) -> list[str]:
    """The least-squares fits of cdni's linear forms: what no rate or optimiser of M could beat."""
    rows = [[str(f["stage"]), f["form"], f"{f['element_cosine']:.3f}", f"{f['weight_cosine']:.3f}"]
            for f in ceiling["fits"]]
    return ["The best a linear M of (h, y) could do: each form solved by least squares on the true gradients of "
            f"{ceiling['fit_batches']} batches and scored on {ceiling['test_batches']} others, on the checkpoint of "
            f"{ceiling['checkpoint']} (`python benchmarks/conv_synth_ceiling.py RUN_DIR`, "
            f"{ceiling['kernel']} x {ceiling['kernel']} kernels; `class map`: a learned map per class alone, "
            "`conv + class map`: cdni's M, `per-class conv`: a kernel per label, a bilinear h x y term; `Adam at "
            "R`: cdni's M fitted instead as a stage fits it, one Adam step a batch at `--synth-lr R` over the same "
            "batches from zero, the script run once per rate):", "",
            *table(["stage", "M", "cosine", "weight-gradient cosine"], ["---:", "---", "---:", "---:"], rows)]


def conv_choice_section(choice: dict, conv_rows: list[dict]) -> list[str]:
    """The offline fits of M's forms to a fixed net's true gradients, then the candidates on the validation split."""
    fits = [[str(f["stage"]), f["form"], f["mode"], f"{f['element_cosine']:.3f}", f"{f['weight_cosine']:.3f}"]
            for f in choice["fits"]["fits"]]
    runs = [[str(r.get("round", 1)), r["candidate"], " / ".join(pct(v["val_accuracy"]) for v in r["validation"]),
             pct(r["test_accuracy"]),
             cosines(r["synth_cosine"]), ms(r["stage2_p50_ms"]), f"{r['peak_rss_mb']['2']:.0f}"]
            for r in choice["runs"]]
    return ["## Conv stages: cdni's synthesizers", "",
            "Why cdni trails backprop on the conv net. A fixed net (the 1-epoch cdni run's checkpoint), the true "
            "gradient of each conv stage's output, and M fitted to it from zero as a stage fits it, "
            f"{choice['fits']['batches']} batches; the cosine of M's prediction to the true gradient, and of the "
            "stage's weight gradient made from it to the true one (the last third of the batches; "
            "`python benchmarks/conv_synth_fit.py RUN_DIR`; `dense`: one linear map of the whole flat map, "
            "as for a dense stage, left out where the map has more than 4,096 values):", "",
            *table(["stage", "M", "mode", "cosine", "weight-gradient cosine"], ["---:", "---", "---", "---:", "---:"],
                   fits),
            *ceiling_part(choice["ceiling"]),
            "The candidates on the validation split (`--eval-every 100`: the last 10,000 training images held "
            "out), one epoch each, seed 0, one run after another under `nice -n 10` (round 3: `nice -n 19`) on a "
            "machine other jobs shared (round 1 at load average 17-25, round 2 at 2-5, round 3 at 3-9): "
            "validation accuracy at 100 / 200 / 300 / 391 batches, test accuracy, each stage's mean synthesizer "
            "cosine (under BP(λ < 1) against its mixed target), stage 2's update latency p50 and peak RSS. The same "
            "seed's run is not always the same run: the age of each target a synthesizer fits depends on the "
            "timing, and a run disturbed by other work can end 2 pp lower (round 2's first run of the default). "
            "Read a candidate against the spread of the default's runs.", "",
            *table(["round", "candidate", "validation", "test", "cosine, stages 1 / 2 / 3", "stage-2 p50 ms",
                    "stage-2 peak RSS MB"], ["---:", "---", "---:", "---:", "---:", "---:", "---:"], runs),
            *(five_epochs(r, conv_rows) for r in choice.get("five_epochs", [])), "",
            *sources(["conv-choice.json"], [choice])]
