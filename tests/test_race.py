"""`dni bench race` and the validation cadence under it (`dni run --eval-every`).

The autouse no_orphans fixture (conftest.py) asserts that no worker is left behind.
"""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from timing import wait_until

from coordinator.bench import race, raceboard, racetune
from coordinator.cli import main, parser
from coordinator.data import DataError, generated_task
from coordinator.data.tasks import VALIDATION
from coordinator.epochs import EpochEnd, epoch_end
from coordinator.position import Position

TINY = ["--hidden", "16,16", "--train-subset", "512", "--no-progress"]


def test_eval_every_evaluates_the_held_out_split_on_a_paused_clock(tmp_path):
    out = tmp_path / "run"
    assert main(["run", *TINY, "--epochs", "2", "--eval-every", "3", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]   # 512 examples, batches of 128: 4 an epoch
    assert steps == 8 and summary["eval_every"] == 3
    v = summary["validation"]
    # Every 3 batches, and once more where an epoch ends off the cadence.
    assert [r["step"] for r in v] == [2, 3, 5, 7]
    assert [r["samples"] for r in v] == [3 * 128, 4 * 128, 6 * 128, 8 * 128]
    assert all(0 <= r["val_accuracy"] <= 1 and np.isfinite(r["val_loss"]) for r in v)
    seconds = [r["train_seconds"] for r in v]
    assert 0 < seconds[0] <= seconds[1] <= seconds[2] <= seconds[3] <= summary["train_seconds"]
    # The test set is read once, at the end.
    assert ["test_accuracy" in h for h in summary["history"]] == [False, True]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [{k: r[k] for k in v[0]} for r in logged if r["stage"] == 0] == v


def test_a_run_with_a_validation_split_resumes_with_its_records(tmp_path):
    out = tmp_path / "run"
    assert main(["run", *TINY, "--epochs", "2", "--eval-every", "3", "--out", str(out)]) == 0
    # The checkpoint's progress holds a history entry per epoch done, as its checks want.
    assert main(["run", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["step"] for r in summary["validation"]] == [2, 3, 5, 7, 8, 11] and summary["resumes"] == 1
    assert [sorted(h) for h in summary["history"]] == [["epoch", "val_accuracy", "val_loss"],
                                                       *[["epoch", "test_accuracy", "test_loss"]] * 2]
    assert summary["history"][0]["val_accuracy"] == summary["validation"][1]["val_accuracy"]


@pytest.mark.parametrize("eval_every, validated, settled, last, want", [
    (0, None, True, False, (True, False, True)),    # no validation split: a barrier and the test set, every epoch
    (3, 6, True, False, (True, True, False)),       # the epoch ends off the cadence: a validation here
    (3, 8, True, False, (True, False, False)),      # the cadence validated at this very batch
    (3, 6, False, False, (False, False, False)),    # a stall below: no barrier, the validation left to the cadence
    (3, None, False, False, (True, True, False)),   # ... unless there is none yet for the epoch's entry to hold
    (3, 6, False, True, (True, True, True)),        # the last epoch: a barrier, a validation, the test set
])
def test_an_epochs_end_evaluates_what_its_split_and_a_stall_below_call_for(eval_every, validated, settled, last,
                                                                            want):
    pos = Position("run", {}, step=8, validation=[] if validated is None else [{"step": validated - 1}])
    assert epoch_end(eval_every, pos, settled, last) == EpochEnd(*want)


def test_the_validation_split_is_the_last_training_examples_centred_with_the_training_mean():
    data = generated_task(n_train=VALIDATION + 100)
    held = data.held_out(VALIDATION)
    assert np.array_equal(held.x_train, data.x_train[:100]) and np.array_equal(held.y_val, data.y_train[100:])
    centred = held.first(50).centred()
    mean = data.x_train[:50].mean(axis=0, dtype=np.float64).astype(np.float32)
    assert np.array_equal(centred.x_val, data.x_train[100:] - mean)
    with pytest.raises(DataError, match="a validation split of 10000 examples leaves none"):
        generated_task(n_train=VALIDATION).held_out(VALIDATION)


@pytest.mark.parametrize("argv, says", [
    (["run", "--model", "rnn", "--task", "copy", "--mode", "truncated", "--boxes", "8", "--steps-per-box", "3",
      "--eval-every", "5"], "--eval-every holds out a validation split of images: --task copy generates"),
    (["bench", "race", "--rows", "dni,nope"], "--rows: expected some of"),
    (["bench", "race", "--target", "1.5"], "--target 1.5: a validation accuracy"),
    (["bench", "race", "--settings", "/nonexistent.json"], "--settings /nonexistent.json: not a readable JSON"),
    (["bench", "race", "--conv", "32,64", "--stages", "3,4"], "--stages 3,4: with --conv 32,64, each network needs"),
])
def test_bad_input_is_one_line_naming_the_option(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err


def test_the_first_to_the_target_and_by_what_factor():
    def run(row, seconds, best, k=3, delay=0.0, single=False):
        return {"row": row, "stages": k, "delay_ms": delay, "single_process": single, "time_to_target_s": seconds,
                "best_val_accuracy": best}
    runs = [run("single", 4.0, 0.97, single=True), run("dni", 2.0, 0.96), run("backprop", None, 0.93),
            run("dni", 3.0, 0.95, delay=20.0), run("backprop", 9.0, 0.951, delay=20.0)]
    at0, at20 = raceboard.settings(runs, 0.95, [0.0, 20.0])
    assert at0["order"] == ["dni", "single", "backprop"] and at0["first"] == "dni" and at0["next"] == "single"
    assert at0["factor"] == 2.0 and at0["reached_by_all"] == 0.93
    # The single process has no links: its one run stands in every delay's table.
    assert at20["order"] == ["dni", "single", "backprop"] and at20["factor"] == 4.0 / 3.0


def sane_run(r: dict, budgets: list[str]) -> None:
    assert r["steps"] == 4 and r["train_seconds"] > 0 and r["samples_per_second"] > 0
    assert 0 < r["best_val_accuracy"] <= 1 and 0 < r["test_accuracy"] <= 1
    assert r["time_to_target_s"] is not None and 0 < r["time_to_target_s"] <= r["train_seconds"]
    assert r["samples_to_target"] in (256, 512)
    assert list(r["val_at_budget"]) == budgets and r["val_at_budget"]["1000"] == r["validation"][-1]["val_accuracy"]
    assert 0 < r["stage1_latency_ms"]["p50"] <= r["stage1_latency_ms"]["p99"]
    stages = 1 if r["single_process"] else 3
    assert len(r["cpu_ms_per_batch"]) == len(r["peak_rss_mb"]) == stages
    assert all(c > 0 for c in r["cpu_ms_per_batch"]) and all(10 < m < 2000 for m in r["peak_rss_mb"])
    if r["single_process"]:
        assert r["bytes_per_batch"] == {} and r["staleness"] is None
        return
    fitted = r["row"] in ("cdni-link", "dni-w4")   # the rows with synthesizers fit targets, some of them late
    assert (r["staleness"]["stage1"]["n"] > 0) == fitted and (r["staleness"]["all"]["n"] > 0) == fitted
    if fitted:
        assert 0 <= r["staleness"]["stage1"]["mean"] <= r["staleness"]["stage1"]["p99"] <= 8
    # 128 x 16 float32 and 128 int64 labels up each link, 128 x 16 float32 down
    assert r["bytes_per_batch"] == {link: {"forward": 128 * 16 * 4 + 128 * 8, "backward": 128 * 16 * 4}
                                    for link in ("1-2", "2-3")}


@pytest.mark.slow   # six jobs: ~15 s
def test_a_small_race_at_0_ms_writes_every_figure(tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"dni-w4": "--mode dni --window 4"}))
    argv = [sys.executable, "-m", "coordinator", "bench", "race", "--one-host", "--stages", "3", "--delays", "0,20",
            "--rows", "single,backprop,gpipe,pipedream,cdni-link,dni-w4", "--settings", str(settings), "--width", "16",
            "--epochs", "1", "--train-subset", "512", "--eval-every", "2", "--target", "0.05", "--budgets", "0,1000",
            "--warmup", "0", "--json", str(tmp_path / "race.json")]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "dni bench race: delays 20 ms not run: --one-host" in run.stdout
    result = json.loads((tmp_path / "race.json").read_text())
    assert result["where"] == "this host" and result["params"]["rows"]["dni-w4"] == "--mode dni --window 4"
    assert [r["row"] for r in result["runs"]] == ["single", "backprop", "gpipe", "pipedream", "cdni-link", "dni-w4"]
    for r in result["runs"]:
        sane_run(r, ["0", "1000"])
    (s,) = result["settings"]
    assert s["stages"] == 3 and s["delay_ms"] == 0 and sorted(s["order"]) == sorted(result["params"]["rows"])
    assert s["first"] == s["order"][0] and s["factor"] >= 1
    # The single process trains backprop's network exactly: the same evaluations.
    single, backprop = result["runs"][:2]
    assert [v["val_accuracy"] for v in single["validation"]] == [v["val_accuracy"] for v in backprop["validation"]]


@pytest.mark.slow   # six jobs: ~15 s
def test_tuning_tries_as_many_settings_for_every_row_and_keeps_the_soonest_to_the_target(tmp_path):
    tuned = tmp_path / "tuned" / "settings.json"
    argv = [sys.executable, "-m", "coordinator", "bench", "race", "--one-host", "--stages", "3", "--delays", "0",
            "--rows", "single,gpipe", "--width", "16", "--epochs", "1", "--train-subset", "512", "--eval-every", "1",
            "--target", "0.12", "--tune", str(tuned), "--json", str(tmp_path / "race.json")]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "race.json").read_text())
    assert [r["row"] for r in result["runs"]] == [f"{row}#{i}" for row in ("single", "gpipe") for i in (1, 2, 3)]
    chosen = json.loads(tuned.read_text())
    for row in ("single", "gpipe"):
        tries = result["tuning"][row]["tries"]
        assert len(tries) == racetune.TRIES and all(t["runs"] == 1 for t in tries.values())
        mine = [r for r in result["runs"] if r["row"].startswith(row)]
        best = min(mine, key=lambda r: (r["time_to_target_s"] is None, r["time_to_target_s"] or 0,
                                        -r["best_val_accuracy"]))
        assert chosen[row] == result["tuning"][row]["flags"] == " ".join(best["flags"])
    assert "--micro-batches" in chosen["gpipe"] and "--lr" in chosen["single"]
    # The race takes the file as it is written, and prints the settings it uses.
    again = subprocess.run([*argv[:argv.index("--tune")], "--settings", str(tuned)], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and f"gpipe        {chosen['gpipe']}" in again.stdout, again.stderr


def test_tuning_a_row_with_no_settings_to_try_is_one_line(tmp_path, capsys):
    (tmp_path / "rows.json").write_text(json.dumps({"mine": "--mode dni"}))
    assert main(["bench", "race", "--rows", "dni,mine", "--settings", str(tmp_path / "rows.json"),
                 "--tune", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert err == "dni: error: --tune: no settings to try for row mine (rows with some: " + ", ".join(racetune.GRID) \
        + ")\n"
    assert all(len(tries) == racetune.TRIES for tries in racetune.GRID.values())   # the same budget for every row



def test_a_row_that_stage_1_feeds_tries_its_rows_settings():
    tried = racetune.candidates(race.fed({"cdni": ("--mode", "cdni")}, ["coordinator", "stage"]))
    n = racetune.TRIES
    assert list(tried) == [*(f"cdni#{i}" for i in range(1, n + 1)), *(f"cdni@stage#{i}" for i in range(1, n + 1))]
    assert all(flags[2:4] == ("--feed", "stage") for name, flags in tried.items() if "@" in name)
    assert racetune.row_of("cdni@stage#2") == "cdni@stage"


def test_a_setting_laid_over_a_rows_flags_replaces_the_options_it_gives():
    tuned = ("--mode", "cdni", "--window", "2", "--feed", "stage", "--lr", "5e-4", "--no-centre")
    assert racetune.laid_over(tuned, ("--window", "4", "--lr", "1e-3")) == \
        ("--mode", "cdni", "--feed", "stage", "--no-centre", "--window", "4", "--lr", "1e-3")
    # a tuned row raced again under --feeds stage names its feed once
    assert race.fed({"cdni": tuned}, ["stage"])["cdni@stage"].count("--feed") == 1
    assert racetune.laid_over(("--mode", "dni", "--no-centre"), ("--no-centre",)) == ("--mode", "dni", "--no-centre")


@pytest.mark.slow   # two jobs of a small conv net: ~10 s
def test_the_conv_net_reaches_every_row_of_the_race(tmp_path, mnist):
    argv = [sys.executable, "-m", "coordinator", "bench", "race", "--one-host", "--stages", "3", "--delays", "0",
            "--rows", "single,cdni", "--conv", "4", "--width", "8", "--data", str(mnist), "--epochs", "1",
            "--train-subset", "256", "--eval-every", "2", "--target", "0.05", "--keep", str(tmp_path / "jobs"),
            "--json", str(tmp_path / "race.json")]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "race.json").read_text())
    assert result["params"]["conv"] == [4] and [r["row"] for r in result["runs"]] == ["single", "cdni"]
    for row in ("single", "cdni"):   # a conv stage, a dense one of 8, the head: 3 stages, in one process or three
        summary = json.loads((tmp_path / "jobs" / f"{row}-k3-d0" / "summary.json").read_text())
        assert summary["conv"] == "4" and summary["stages"] == 3 and summary["steps"] == 2
    (cdni,) = [r for r in result["runs"] if r["row"] == "cdni"]
    # a 28x28x4 map pooled to 14x14x4 float32 (and the labels) up the first link
    assert cdni["bytes_per_batch"]["1-2"]["forward"] == 128 * 14 * 14 * 4 * 4 + 128 * 8


def test_without_root_the_0_ms_race_runs_and_the_rest_is_refused_in_one_line(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps({"broken": "--mode nope"}))
    argv = [sys.executable, "-m", "coordinator", "bench", "race", "--stages", "2", "--delays", "0,5",
            "--bandwidth", "100mbit", "--rows", "broken,dni", "--settings", "rows.json", "--width", "8", "--epochs",
            "1", "--train-subset", "256", "--eval-every", "2", "--json", str(tmp_path / "race.json")]
    # A user namespace of its own makes this process uid 65534 while it can still read our files.
    run = subprocess.run(["unshare", "--user", *argv] if os.geteuid() == 0 else argv,
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 1, run.stderr   # the race went on past its failed job, and says so
    refused = [line for line in run.stdout.splitlines() if "not run" in line]
    assert refused == ["dni bench race: delays 5 ms, --bandwidth not run: dni bench network needs root: it makes "
                       "a network namespace, veth pair, qdisc and cgroup per host"]
    result = json.loads((tmp_path / "race.json").read_text())
    assert [(r["row"], r["delay_ms"]) for r in result["runs"]] == [("dni", 0.0)]
    # A job that fails is reported, and the race goes on.
    (failed,) = result["failed"]
    assert failed["row"] == "broken" and failed["error"].startswith("broken-k2-d0: the job failed (exit 2)")


@pytest.mark.slow   # three small jobs, one of them twice: ~15 s
def test_a_stopped_race_keeps_the_jobs_it_ran_and_goes_on_from_them(tmp_path):
    race = tmp_path / "race.json"
    argv = [sys.executable, "-m", "coordinator", "bench", "race", "--one-host", "--stages", "3", "--delays", "0",
            "--rows", "backprop,dni,cdni", "--width", "16", "--epochs", "1", "--train-subset", "512",
            "--eval-every", "2", "--target", "0.05", "--json", str(race)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Stopped once its first job is written, in the middle of the second.
    wait_until(lambda: race.exists() and json.loads(race.read_text())["runs"], 120, "the first job written", proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    stopped = json.loads(race.read_text())
    assert [r["row"] for r in stopped["runs"]] == ["backprop"] and "settings" not in stopped
    again = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"[1/3] backprop K=3 0 ms: in {race} already" in again.stdout
    result = json.loads(race.read_text())
    assert [r["row"] for r in result["runs"]] == ["backprop", "dni", "cdni"] and not result["failed"]
    assert result["runs"][0] == stopped["runs"][0]   # not run again: its very figures (times too)
    assert sorted(result["settings"][0]["order"]) == ["backprop", "cdni", "dni"]
    assert len(result["continued"]) == 1 and result["machine"] == stopped["machine"]


@pytest.mark.parametrize("extra, says", [
    ([], "--resume: give the race to go on with as --json FILE"),
    (["--json", "/nonexistent.json"], "--resume: --json /nonexistent.json is not a race's readable JSON"),
])
def test_resuming_a_race_without_one_is_one_line(extra, says, capsys):
    assert main(["bench", "race", "--resume", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err


def test_resuming_a_race_with_other_options_is_one_line_naming_them(tmp_path, capsys):
    path = tmp_path / "race.json"
    args = ["bench", "race", "--one-host", "--stages", "3", "--rows", "dni", "--json", str(path)]
    p = race.params(parser().parse_args(args))
    result = {"bench": "race", "where": "this host", "runs": [], "failed": [],
              "params": {**p, "rows": {k: " ".join(v) for k, v in p["rows"].items()}}}
    path.write_text(json.dumps(result))
    assert main([*args, "--width", "32", "--budgets", "5", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == f"dni: error: --resume: the race in {path} ran with other options (budgets, width)\n"


@pytest.mark.slow   # three small jobs: ~8 s
def test_the_race_races_every_row_fed_by_stage_one_too(tmp_path):
    argv = [sys.executable, "-m", "coordinator", "bench", "race", "--one-host", "--stages", "3", "--delays", "0",
            "--rows", "single,backprop", "--feeds", "coordinator,stage", "--width", "16", "--epochs", "1",
            "--train-subset", "512", "--eval-every", "2", "--target", "0.05", "--json", str(tmp_path / "race.json")]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "race.json").read_text())
    assert result["params"]["rows"]["backprop@stage"] == "--mode backprop --lr 2e-3 --feed stage"
    single, fed, read = result["runs"]
    assert (single["row"], fed["row"], read["row"]) == ("single", "backprop", "backprop@stage")
    # The same batches in the same order: the same evaluations.
    assert [v["val_accuracy"] for v in read["validation"]] == [v["val_accuracy"] for v in fed["validation"]]


def test_a_race_of_feeds_that_are_none_is_one_line(capsys):
    assert main(["bench", "race", "--feeds", "disk"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--feeds" in err, err
