"""The layering the tree promises: no import cycle, protocol/ on its own, numerics free of sockets and clocks."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "workers", "coordinator")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every name an import statement anywhere in the file reaches (in functions and under TYPE_CHECKING too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return out


def project_imports(path: Path) -> set[str]:
    """The project's modules this file imports."""
    return {n for n in imported_names(path) if n in MODULES} - {module_name(path)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_finder_sees_cycles_and_function_level_imports():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse("def f():\n    from workers.numerics import stage\n")
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))
    assert "workers.numerics.stage" in project_imports(MODULES["workers.roles.layer"])


def test_no_import_cycle():
    graph = {name: project_imports(path) for name, path in MODULES.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_protocol_imports_nothing_else_of_the_project():
    for name, path in MODULES.items():
        if name.split(".")[0] == "protocol":
            others = {n for n in project_imports(path) if n.split(".")[0] != "protocol"}
            assert not others, f"{name} imports {sorted(others)}"


NUMERICS = [name for name in MODULES if name.startswith("workers.numerics")]


@pytest.mark.parametrize("name", NUMERICS)
def test_numerics_import_no_sockets_and_no_clocks(name):
    roots = {n.split(".")[0] for n in imported_names(MODULES[name])}
    assert not roots & {"zmq", "time"}, f"{name} imports {sorted(roots & {'zmq', 'time'})}"


def test_the_numerics_run_without_zmq():
    """Nothing the numerics import at run time brings in ZeroMQ (type-only imports stay type-only)."""
    code = f"import sys\nfor m in {NUMERICS!r}: __import__(m)\nprint('zmq' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", list(MODULES))
def test_modules_are_short_and_say_what_they_hold(name):
    path = MODULES[name]
    text = path.read_text()
    summary, _, rest = (ast.get_docstring(ast.parse(text)) or "").partition("\n")
    assert summary.strip() and (not rest or rest.startswith("\n")), f"{name}: no one-line docstring on top"
    assert len(text.splitlines()) <= 300, f"{name}: {len(text.splitlines())} lines"


def test_ruff_passes_on_the_whole_tree():
    """The linter pyproject.toml configures (line length, import order, unused names), on every file."""
    ruff = Path(sys.executable).with_name("ruff")
    assert ruff.exists(), "ruff is part of the test extra: pip install -e '.[test]'"
    done = subprocess.run([str(ruff), "check", "--no-cache", str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
