"""The pieces every section of docs/results.md is made of: number formats, a markdown table, sources, the machine."""


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def pp(x: float) -> str:
    return f"{100 * x:+.2f} pp".replace("-", "−")


def table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table; align holds '---' or '---:' per column."""
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def sources(names: list[str], records: list[dict]) -> list[str]:
    """Where a table's figures come from: the JSON files, and their "source" notes when they have them."""
    notes = list(dict.fromkeys(r["source"] for r in records if r.get("source")))
    files = ", ".join(f"[results/{name}](results/{name})" for name in names)
    return [f"From {files}" + "".join(f"; {n}" if i else f": {n}" for i, n in enumerate(notes)) + ".", ""]


def machine(result: dict) -> str:
    m = result["machine"]
    blas = m["blas"]
    return (f"{m['cpus']} cores, {blas['name']} {blas.get('version', '')} kernel {blas.get('kernel', '?')} with "
            f"{blas.get('threads', '?')} thread, numpy {m['numpy']}, pyzmq {m['pyzmq']}, load average "
            f"{' '.join(f'{x:.2f}' for x in m['load_average'])} at the start")


def versus_backprop(rows: list[dict], key: str) -> dict:
    """Each row's test accuracy minus backprop's in the same group (same stages, or same task)."""
    base = {r[key]: r["test_accuracy"] for r in rows if r["mode"] == "backprop"}
    return {id(r): r["test_accuracy"] - base[r[key]] for r in rows if r["mode"] != "backprop" and r[key] in base}


def targets(result: dict) -> list[str]:
    return [f"- {'pass' if t['pass'] else '**miss**'}: {t['name']}: {t['value']:.3g} (want {t['op']} {t['limit']:g})"
            for t in result["targets"]] + [""]
