"""Install the fleet's hooks, chaining whatever hook was there before.

A hook of the user's is renamed to HOOK.pre-fleet and run first by the fleet's shim, which
carries a marker line so that installing again only refreshes it. A `core.hooksPath` directory
is written to only where that is safe: set in this repository's own config and outside every
worktree. Otherwise (husky and friends keep hooks in the checkout, where an agent could edit
them) the exact line to add is returned instead.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import durable
from .errors import FleetError
from .gateway.repo import Repo

MARKER = "git-fleet-hook-v1"
CHAINED = ".pre-fleet"
WORKTREE_HOOKS = ("pre-commit", "pre-merge-commit", "pre-push", "pre-receive")
SERVER_HOOKS = ("pre-receive",)
ACROSS_MACHINES = ("post-commit",)  # a fleet across machines: an agent's commits published (publish.py)
READS_STDIN = {"pre-push", "pre-receive"}


@dataclass
class HookReport:
    directory: Path | None = None
    installed: list[str] = field(default_factory=list)
    chained: list[str] = field(default_factory=list)
    manual: list[str] = field(default_factory=list)  # lines for the user to add by hand


def interpreter() -> str:
    """The Python that has git-fleet installed, so the hook depends on neither PATH nor a
    console script (pip's wrapper imports `re`, which costs every commit ~4 ms)."""
    return sys.executable


def _template() -> str:
    return resources.files("git_fleet._hooks").joinpath("fleet-hook.sh").read_text(encoding="utf-8")


def _shell_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def render(hook: str, python: str) -> str:
    return (_template().replace("@HOOK@", hook).replace("@PYTHON@", _shell_quote(python))
            .replace("@STDIN@", "1" if hook in READS_STDIN else "0"))


def is_ours(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return MARKER.encode() in fh.read(400)
    except OSError:
        return False


def hooks_dir(repo: Repo) -> tuple[Path, bool]:
    """The directory git runs hooks from, and whether the fleet may write there."""
    configured = repo.config_get("core.hooksPath")
    if not configured:
        return repo.common_dir / "hooks", True
    expanded = Path(os.path.expanduser(configured))
    if not expanded.is_absolute():
        base = repo.main_worktree or repo.common_dir
        return Path(os.path.normpath(base / expanded)), False
    real = os.path.realpath(expanded)
    in_git_dir = (real + os.sep).startswith(os.path.realpath(repo.common_dir) + os.sep)  # not the checkout's
    inside_worktree = not in_git_dir and any(
        real.startswith(os.path.realpath(w.path) + os.sep) for w in repo.worktrees() if not w.bare
    )
    local = repo.config_origin("core.hooksPath") == "local"
    return expanded, local and not inside_worktree


def manual_lines(directory: Path, names: tuple[str, ...]) -> list[str]:
    lines = []
    for name in names:
        args = ' "$@"' if name in READS_STDIN else ""
        lines.append(f"add to {directory / name}:  git-fleet-check --hook {name}{args}")
    if any(part in (".husky", "_") for part in directory.parts[-2:]):
        lines.append("with husky, put those lines in .husky/<hook> (husky runs them from its own directory)")
    lines.append("or, with the pre-commit framework, add the hook 'fleet-zone-check' (see .pre-commit-hooks.yaml)")
    return lines


def install(repo: Repo, names: tuple[str, ...] = WORKTREE_HOOKS) -> HookReport:
    directory, writable = hooks_dir(repo)
    report = HookReport(directory)
    if not writable:
        report.manual = manual_lines(directory, names)
        return report
    directory.mkdir(parents=True, exist_ok=True)
    python = interpreter()
    for name in names:
        target = directory / name
        chained = directory / (name + CHAINED)
        if target.exists() and not is_ours(target):
            if chained.exists():
                raise FleetError(f"cannot chain {target}: {chained} exists already",
                                 "merge the two hooks by hand, then run `git fleet-init` again")
            os.replace(target, chained)
            report.chained.append(name)
        durable.replace(target, render(name, python), mode=0o755)  # (its directory's fsync keeps the rename above too)
        report.installed.append(name)
    return report


def uninstall(repo: Repo, names: tuple[str, ...] = WORKTREE_HOOKS + ACROSS_MACHINES) -> HookReport:
    directory, _writable = hooks_dir(repo)
    report = HookReport(directory)
    for name in names:
        target = directory / name
        chained = directory / (name + CHAINED)
        if not is_ours(target):
            continue
        if chained.exists():
            os.replace(chained, target)
            report.chained.append(name)
        else:
            target.unlink()
        report.installed.append(name)
    return report
