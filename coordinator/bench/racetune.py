"""`dni bench race --tune`: the same number of settings for every row, raced on the validation split; the best kept.

Each row gets TRIES settings, laid over its flags (argparse takes the last of a flag): the rate
for the rows that train on true gradients (the single process, backprop, pipedream), the
micro-batches for gpipe (its gradient is backprop's, summed in another order, so its rate is
backprop's), the window and the rate for dni, cdni and cdni-taken, BP(lambda) and the window for the link
rows; a row that stage 1 feeds (ROW@stage) tries ROW's. A row's best setting is the one that reached the
target in the most of the race's settings (depths and delays), then in the least time summed over them,
then with the highest mean best validation accuracy. The result is a --settings file: the race run with it
uses the settings and prints them.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

TRIES = 3
RATES = ("--lr 5e-4", "--lr 1e-3", "--lr 2e-3")
# dni and cdni: the window (a wider one trains faster on staler targets), and a smaller step for
# the stale targets of a deep pipeline (the rate pipedream's stashed weights took)
WINDOWS = ("--window 2", "--window 4", "--window 2 --lr 5e-4")
LINK = ("--bp-lambda 0 --window 2", "--bp-lambda 0 --window 8", "--bp-lambda 0.5 --window 4")
GRID = {"single": RATES, "backprop": RATES, "pipedream": RATES, "dni": WINDOWS, "cdni": WINDOWS,
        "gpipe": ("--micro-batches 2", "--micro-batches 4", "--micro-batches 8"),
        "dni-link": LINK, "cdni-link": LINK,
        "cdni-taken": ("--window 2", "--window 2 --lr 5e-4", "--window 4 --lr 5e-4")}
SEP = "#"   # a candidate's name: its row, SEP, its place in the row's grid (1-based)
STAGE_FED = "@stage"   # the name's tail of a row stage 1 feeds (race.fed): it tries its row's settings


def row_of(name: str) -> str:
    """The row a candidate tries a setting of (a row's own name is its row)."""
    return name.split(SEP, 1)[0]


def grid_of(name: str) -> tuple[str, ...] | None:
    """The settings a row tries, whoever feeds it (None: it has none)."""
    return GRID.get(name.removesuffix(STAGE_FED))


def laid_over(flags: tuple[str, ...], extra: tuple[str, ...]) -> tuple[str, ...]:
    """`flags` with `extra` laid over them: an option extra gives (with its value) replaces the same option in
    flags, so a row's printed flags name each option once (argparse would take the last anyway)."""
    given = {f for f in extra if f.startswith("--")}
    out, skip = [], False
    for i, f in enumerate(flags):
        if skip:
            skip = False
        elif f in given:
            skip = i + 1 < len(flags) and not flags[i + 1].startswith("--")   # its value goes with it
        else:
            out.append(f)
    return (*out, *extra)


def candidates(rows: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Every row's tries as rows of their own, named row#1 .. row#TRIES; a row without a grid is refused."""
    unknown = [name for name in rows if grid_of(name) is None]
    if unknown:
        raise ValueError(f"--tune: no settings to try for row {', '.join(unknown)} (rows with some: {', '.join(GRID)})")
    return {f"{name}{SEP}{i}": laid_over(flags, tuple(shlex.split(extra))) for name, flags in rows.items()
            for i, extra in enumerate(grid_of(name), 1)}


def score(runs: list[dict]) -> tuple:
    """What makes a candidate better (larger is better): targets reached, less time, higher accuracy."""
    reached = [r["time_to_target_s"] for r in runs if r["time_to_target_s"] is not None]
    return len(reached), -sum(reached), sum(r["best_val_accuracy"] for r in runs) / len(runs)


def choose(runs: list[dict], tried: dict[str, tuple[str, ...]]) -> dict[str, dict]:
    """Per row: its tries' figures, and the best one's flags (as --settings takes them; None if none ran)."""
    out: dict[str, dict] = {}
    best: dict[str, tuple] = {}
    for name, flags in tried.items():
        row, mine = row_of(name), [r for r in runs if r["row"] == name]
        entry = out.setdefault(row, {"tries": {}, "flags": None})
        reached, seconds, accuracy = score(mine) if mine else (0, None, None)
        entry["tries"][" ".join(flags)] = {"runs": len(mine), "reached": reached,
                                           "seconds_to_target": -seconds if reached else None,
                                           "mean_best_val_accuracy": accuracy}
        if mine and (row not in best or score(mine) > best[row]):
            entry["flags"], best[row] = " ".join(flags), score(mine)
    return out


def write(chosen: dict[str, dict], path: str) -> None:
    """The best flags of every row that ran, as a --settings file."""
    Path(path).write_text(json.dumps({row: c["flags"] for row, c in chosen.items() if c["flags"]}, indent=1) + "\n")


def print_chosen(chosen: dict[str, dict], path: str) -> None:
    print(f"\ntuned (the best of {TRIES} settings a row; written to {path}, for --settings):")
    for row, c in chosen.items():
        for flags, t in c["tries"].items():
            seconds = "-" if t["seconds_to_target"] is None else f"{t['seconds_to_target']:.1f} s"
            acc = "-" if t["mean_best_val_accuracy"] is None else f"{100 * t['mean_best_val_accuracy']:.2f}%"
            mark = "*" if flags == c["flags"] else " "
            print(f" {mark} {row:<10} {flags:<60} target in {t['reached']}/{t['runs']}, {seconds}, best {acc}")
