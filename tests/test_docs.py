"""The docs say what is there: the results page is what its generator renders, and every file they name exists."""
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "docs" / "lab"
TOP = ("coordinator", "workers", "protocol", "benchmarks", "tests", "docs", "examples")
# A repository path in prose or code: one of the top directories, not inside a longer path or a URL.
PATH = re.compile(r"(?<![\w./~-])((?:%s)/[\w./*-]*)" % "|".join(TOP))
MODULE = re.compile(r"-m ((?:%s)(?:\.\w+)*)" % "|".join(TOP))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def docs() -> list[Path]:
    """README.md, every page under docs/, and the files under examples/ (the Slurm script is one)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
            *sorted(p for p in (ROOT / "examples").rglob("*") if p.is_file())]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


def named(doc: Path):
    """(line number, name) of every repository file, directory or module the doc names."""
    for n, line in enumerate(doc.read_text().splitlines(), 1):
        for m in PATH.finditer(line):
            yield n, m.group(1).rstrip(".,:;*")
        for m in MODULE.finditer(line):
            yield n, m.group(1)


def exists(name: str) -> bool:
    if "/" not in name:   # a module run with -m: a file, or a package with __init__ or __main__
        base = ROOT / name.replace(".", "/")
        return base.with_suffix(".py").exists() or (base / "__init__.py").exists() or (base / "__main__.py").exists()
    return bool(list(ROOT.glob(name))) if "*" in name else (ROOT / name).exists()


def results_page():
    spec = importlib.util.spec_from_file_location("results_page", ROOT / "benchmarks" / "results_page.py")
    page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(page)
    return page


def test_results_page_is_generated():
    assert (ROOT / "docs" / "results.md").read_text() == results_page().render(), \
        "docs/results.md is stale: run python benchmarks/results_page.py"


def test_the_readmes_results_open_with_the_generated_race_table():
    page = results_page()
    readme = (ROOT / "README.md").read_text()
    assert readme == page.readme(), "README.md's race table is stale: run python benchmarks/results_page.py"
    results = readme.partition("## Results\n\n")[2]
    assert results.startswith(page.BEGIN) and "| network | stages | ms per link |" in results


def test_a_fresh_run_renders_without_a_source_note():
    """A command's own JSON has no "source" (only transcribed figures say where they came from)."""
    page = results_page()
    rows = [{k: v for k, v in r.items() if k != "source"} for r in page.load("depth.json")]
    section = "\n".join(page.depth_section(rows))
    assert "| 6 | dni | " in section and section.rstrip().endswith("From [results/depth.json](results/depth.json).")


def test_every_named_file_exists():
    """Reference pages name files of today. Lab pages (docs/lab) record a past commit, named on their first
    lines, and may name the files of that commit."""
    missing = [f"{doc.relative_to(ROOT)}:{n}: {name}" for doc in docs() if LAB not in doc.parents
               for n, name in named(doc) if not exists(name)]
    assert not missing, "the docs name files that do not exist (fix the doc, or move what it says to docs/lab):\n" \
        + "\n".join(missing)


def test_lab_pages_say_when_and_at_which_commit():
    """A lab page is a record of its date: its name starts with the date, its first paragraph says so and
    names the commit it was measured at; the lab's README lists it."""
    index = (LAB / "README.md").read_text()
    for page in sorted(set(LAB.glob("*.md")) - {LAB / "README.md"}):
        assert f"]({page.name})" in index, f"{page.name}: not listed in docs/lab/README.md"
        date = page.name[:10]
        first = page.read_text().split("\n\n")[1]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", date), f"{page.name}: the name does not start with its date"
        assert re.match(rf"\*Lab record of {date}, measured at commit [0-9a-f]{{7,40}}\b", first), \
            f"{page.name}: the first paragraph does not say it is a lab record of {date} at a named commit"


def test_every_relative_link_resolves():
    broken = []
    for doc in docs():
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for target in LINK.findall(line):
                if re.match(r"[a-z]+:", target):
                    continue
                path, _, anchor = target.partition("#")
                page = (doc.parent / path).resolve() if path else doc
                if not page.exists() or (anchor and page.suffix == ".md" and anchor not in anchors(page)):
                    broken.append(f"{doc.relative_to(ROOT)}:{n}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)
