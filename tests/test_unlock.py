"""The random update schedule (--p-update) over real processes: today's run at p 1, one seeded pattern below it."""
import pytest
from resumable import assert_same_checkpoint, records, stopped_by_sigterm, summary
from timing import FAST

from coordinator.cli import main
from workers.numerics.draws import UpdateDraws

# dni with per-link credit and a window of 1: each stage takes batch b + 1 only once b's target came back,
# so the arithmetic does not depend on timing and two runs can be compared bit for bit.
SEED = 2
JOB = ["--mode", "dni", "--credit", "link", "--window", "1", "--hidden", "16,16", "--train-subset", "1024",
       "--batch-size", "32", "--epochs", "3", "--seed", str(SEED), "--log-every", "1", "--checkpoint-every", "0",
       "--checkpoint-seconds", "0"]
STEPS = 3 * 32


def run(out, *argv) -> None:
    assert main(["run", *JOB, *argv, "--out", str(out), *FAST]) == 0


def skipped(out, stage: int) -> list[int]:
    return sorted(r["step"] for r in records(out) if r["stage"] == stage and r.get("skipped"))


def test_p_update_1_is_todays_run_bit_for_bit(tmp_path):
    run(tmp_path / "today")
    run(tmp_path / "p1", "--p-update", "1")
    assert_same_checkpoint(tmp_path / "today", tmp_path / "p1")
    assert summary(tmp_path / "p1")["history"] == summary(tmp_path / "today")["history"]
    assert all(summary(tmp_path / "p1")["workers"][k]["updates"] == STEPS for k in ("1", "2", "3"))


def test_p_update_draws_one_seeded_pattern_per_stage_on_every_run_and_after_resume(tmp_path):
    run(tmp_path / "a", "--p-update", "0.5")
    run(tmp_path / "b", "--p-update", "0.5")
    assert_same_checkpoint(tmp_path / "a", tmp_path / "b")
    done = summary(tmp_path / "a")
    for stage in (1, 2, 3):
        draws = UpdateDraws(0.5, SEED, stage)
        want = [b for b in range(STEPS) if not draws.next()]
        assert skipped(tmp_path / "a", stage) == skipped(tmp_path / "b", stage) == want, stage
        assert done["workers"][str(stage)]["updates"] == STEPS - len(want) and 0 < len(want) < STEPS
    part = tmp_path / "part"
    _, stopped = stopped_by_sigterm(part, *JOB, "--p-update", "0.5")
    assert 20 <= stopped["step"] < STEPS
    assert main(["run", "--resume", str(part), *FAST]) == 0
    assert_same_checkpoint(tmp_path / "a", part)
    for stage in (1, 2, 3):
        assert skipped(part, stage) == skipped(tmp_path / "a", stage), stage


@pytest.mark.parametrize("argv, words", [
    (["--p-update", "0"], "--p-update must be positive and finite, got 0.0"),
    (["--p-update", "1.5"], "--p-update must lie in (0, 1], got 1.5"),
    (["--p-update", "0.5", "--mode", "backprop"], "--p-update 0.5 skips updates of stages that learn from "
                                                  "synthesizers: it needs --model ff and --mode dni or cdni"),
    (["--p-update", "0.5", "--mode", "gpipe"], "not --model ff --mode gpipe"),
    (["--p-update", "0.5", "--mode", "pipedream"], "not --model ff --mode pipedream"),
])
def test_bad_unlock_options_give_one_line_errors(argv, words, capsys, tmp_path):
    assert main(["run", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dni: error:") and words in err and "\n" not in err, err
