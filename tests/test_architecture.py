"""The layout docs/architecture.md draws, kept true: its module list is the tree, imports go
one way (commands -> domain -> gateway), nothing imports the command layer, there is no import
cycle and no import hidden in a function without a word on why, the commit hook's warm path
imports nothing heavy, and sizes stay where a reader can hold them."""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers import Sandbox

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "git_fleet"
# (and the package itself: it holds the version, and `from .. import durable` names it)
BASE = {"git_fleet", "git_fleet.errors", "git_fleet.durable", "git_fleet.files", "git_fleet.pause",
        "git_fleet.processes", "git_fleet.match", "git_fleet.notify"}
OUTSIDERS = {"git_fleet.demo", "git_fleet.standin"}  # act as a person and an agent: they run git and git fleet-*


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        found[name] = path
    return found


def imports(name: str, path: Path) -> list[tuple[str, bool, bool, int]]:
    """(module imported, at the top level (not in a function), for type checking only, line)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[tuple[str, bool, bool, int]] = []

    def visit(node: ast.AST, top: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner_top = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            guarded = typing_only or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            if isinstance(child, ast.Import):
                found.extend((a.name, top, typing_only, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                found.append((mod, top, typing_only, child.lineno))
                for alias in child.names:  # `from . import x`: x may be a module
                    found.append((f"{mod}.{alias.name}", top, typing_only, child.lineno))
            visit(child, inner_top, guarded)

    visit(tree, True, False)
    known = modules()
    return [(m, t, g, n) for m, t, g, n in found if m in known]


def layer(name: str) -> str:
    if name.startswith("git_fleet.cli"):
        return "commands"
    if name.startswith("git_fleet.gateway"):
        return "gateway"
    return "base" if name in BASE else "domain"


def test_the_module_list_is_the_tree() -> None:
    text = (ROOT / "docs/architecture.md").read_text()
    block = text.split("\n## Modules\n", 1)[1].split("```", 2)[1]
    listed = {line.split()[0] for line in block.splitlines() if line.strip()}
    tree = {str(p.relative_to(PKG)) for p in modules().values()}
    assert listed == tree, f"not in the tree: {sorted(listed - tree)}; not in the note: {sorted(tree - listed)}"


def test_imports_go_one_way() -> None:
    allowed = {"commands": {"commands", "domain", "gateway", "base"}, "domain": {"domain", "gateway", "base"},
               "gateway": {"gateway", "base"}, "base": {"base"}}
    wrong = [f"{name}:{line} imports {mod}" for name, path in modules().items()
             for mod, _top, _typing, line in imports(name, path) if layer(mod) not in allowed[layer(name)]]
    assert not wrong


def cycle_in(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` (module -> what it imports), as the modules along it; [] if none."""
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return []


def test_cycle_in_finds_a_cycle() -> None:
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycle_and_no_import_hidden_without_a_reason() -> None:
    # runtime imports at the top of a module; a package's own __init__ is not counted (importing
    # a submodule runs it first anyway)
    graph = {name: {m for m, top, typing_only, _ in imports(name, path)
                    if top and not typing_only and m != name and not name.startswith(m + ".")}
             for name, path in modules().items()}
    cycle = cycle_in(graph)
    assert not cycle, "an import cycle: " + " -> ".join(cycle)
    unexplained = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        for mod, top, typing_only, line in imports(name, path):
            if not top and not typing_only and "#" not in lines[line - 1] and not lines[line - 2].strip().startswith("#"):
                unexplained.append(f"{path.relative_to(ROOT)}:{line} imports {mod} inside a function, and says not why")
    assert not unexplained, "\n".join(unexplained)


def test_nothing_but_the_gateway_starts_git() -> None:
    starts = re.compile(r"""\[\s*["']git["']""")
    found = [f"{p.relative_to(ROOT)}:{i}" for name, p in modules().items() if layer(name) != "gateway"
             and name not in OUTSIDERS for i, line in enumerate(p.read_text().splitlines(), 1) if starts.search(line)]
    assert not found, found


def test_the_commit_hooks_warm_path_imports_nothing_heavy(fleet_repo: Sandbox) -> None:
    """Measured on a real commit (python -X importtime, through the installed hook): none of
    click, pygit2, a TOML reader or the fleet's domain beyond the check."""
    sb = fleet_repo
    web = sb.add_agent("web", "src/frontend/**")
    sb.commit(web, {"src/frontend/a.js": "a\n"}, "warms the zone cache")
    (web / "src/frontend/b.js").write_text("b\n")
    sb.git("add", "-A", cwd=web)
    # (without coverage's start-up in the hook's process, when the suite runs under coverage: it
    # reads its configuration with tomllib, before the hook's first line)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    proc = subprocess.run(["git", "commit", "-qm", "b"], cwd=web, capture_output=True, text=True,
                          env={**env, "PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "git_fleet.hook" in imported and "git_fleet.check" in imported  # (it did measure the hook)
    heavy = {m for m in imported if m.split(".")[0] in ("click", "pygit2", "tomllib", "tomli_w")
             or m in ("git_fleet.fleet", "git_fleet.config", "git_fleet.zones", "git_fleet.gateway.repo")}
    assert not heavy, sorted(heavy)


def test_sizes_stay_where_a_reader_can_hold_them() -> None:
    """Modules up to 400 lines, classes 250, functions 60, unless a comment says why (a line
    starting `# longer than` just above the def or class, or among a module's first lines)."""
    too_big = []
    for path in modules().values():
        lines = path.read_text().splitlines()
        rel = path.relative_to(ROOT)
        if len(lines) > 400 and not any(line.startswith("# longer than") for line in lines[:30]):
            too_big.append(f"{rel}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                limit = 250 if isinstance(node, ast.ClassDef) else 60
                size = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                said = lines[first - 2].strip().startswith("# longer than") if first > 1 else False
                if size > limit and not said:
                    too_big.append(f"{rel}:{node.lineno} {node.name}: {size} lines")
    assert not too_big, "\n".join(too_big)


CASES = [("[[:alpha:]]x", "ax"), ("[[:digit:]]", "5"), ("a?c", "aéc"), ("a??c", "aéc")]


def test_zones_agree_with_git_where_pathspec_does_not(tmp_path: Path) -> None:
    """Why zones translate gitignore patterns themselves (docs/architecture.md, Dependencies):
    on these cases git and zones agree and pathspec does not. When a later pathspec agrees with
    git on them, this fails: the time to reconsider it."""
    pathspec = pytest.importorskip("pathspec")
    from git_fleet.zones import Zone

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for pattern, path in CASES:
        (tmp_path / ".gitignore").write_text(pattern + "\n")
        git = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=tmp_path).returncode == 0
        assert Zone([pattern]).owns(path) == git, (pattern, path)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (pathspec warns of the character class it misreads)
            theirs = pathspec.PathSpec.from_lines("gitwildmatch", [pattern]).match_file(path)
        assert theirs != git, f"pathspec now agrees with git on {pattern!r} for {path!r}"
