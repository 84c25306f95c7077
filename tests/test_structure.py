"""Dependencies go one way: no import cycles inside rgbacli (imports inside functions count too),
and commands never import the CLI that registers them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rgbacli"


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every rgbacli module `name` imports anywhere in its file (the longest known prefix of each)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            # the package root and a module's own parent packages are not dependencies
            if t and t != "rgbacli" and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(m, f, set(mods)) for m, f in mods.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m, path):
        state[m] = 1
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_commands_do_not_import_the_cli():
    mods = _modules()
    for name, path in mods.items():
        if name.startswith("rgbacli.commands"):
            assert "rgbacli.cli" not in _imports(name, path, set(mods)), name


def test_benchmarks_and_scripts_parse_on_this_python():
    """Benchmarks and scripts are not imported by the suite, so a syntax error there (an f-string
    with nested double quotes before Python 3.12) would only show when someone runs them."""
    root = Path(__file__).resolve().parents[1]
    for path in sorted([*root.glob("benchmarks/*.py"), *root.glob("scripts/*.py")]):
        compile(path.read_text(), str(path), "exec")
