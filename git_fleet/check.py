"""Zone checks of a staged change, a push and a receive, and the compiled zone cache.

The commit hook runs on every commit of every agent, so the zones are compiled once into
plain regular expressions and kept in `<common dir>/fleet/zones.json`, keyed by the identity
of the orchestrator's `.gitfleet.toml` and of the repository's git config. A warm hook reads
that file, asks git once for the staged change and matches: no TOML, no pygit2, no click.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import repo as gitrepo
from .errors import FleetError

CACHE_VERSION = 2
CONFIG_NAME = ".gitfleet.toml"
STATUS_WORDS = {"A": "added", "M": "modified", "D": "deleted", "T": "changed type of", "C": "copied to",
                "U": "unmerged", "R": "renamed"}


@dataclass(frozen=True)
class CompiledAgent:
    name: str
    branch: str
    worktree: str  # absolute, normalised
    zone: tuple[str, ...]
    rx: tuple[tuple[Any, bool], ...]  # (compiled regex, include), in zone order

    def owns(self, path: str) -> bool:
        key = path.encode("utf-8", "surrogateescape").decode("latin-1")
        for rx, include in reversed(self.rx):
            if rx.match(key):
                return include
        return False


@dataclass(frozen=True)
class Compiled:
    agents: dict[str, CompiledAgent]
    protected: tuple[str, ...]  # paths (files or directories) no agent may change

    def agent_for(self, head_ref: str | None, worktree: Path | None) -> CompiledAgent | None:
        """The agent a worktree belongs to: by its branch, else by its registered path."""
        if head_ref and head_ref.startswith("refs/heads/"):
            branch = head_ref[11:]
            for a in self.agents.values():
                if a.branch == branch:
                    return a
        if worktree is not None:
            here = os.path.realpath(worktree)
            for a in self.agents.values():
                if os.path.realpath(a.worktree) == here:
                    return a
        return None

    def agent_by_branch(self, branch: str) -> CompiledAgent | None:
        return next((a for a in self.agents.values() if a.branch == branch), None)

    def owners(self, path: str) -> list[str]:
        return [a.name for a in self.agents.values() if a.owns(path)]

    def is_protected(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.protected)


def _identity(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino]


def _from_json(data: dict[str, Any]) -> Compiled:
    agents = {
        name: CompiledAgent(name, a["branch"], a["worktree"], tuple(a["zone"]),
                            tuple((re.compile(r), inc) for r, inc in a["rx"]))
        for name, a in data["agents"].items()
    }
    return Compiled(agents, tuple(data["protected"]))


def protected_paths(common_dir: Path) -> list[str]:
    """The fleet config, and the hooks directory where core.hooksPath puts it inside the checkout."""
    paths = [CONFIG_NAME]
    hooks_path = gitrepo.git(["config", "--get", "core.hooksPath"], common_dir, check=False).stdout.decode().strip()
    if hooks_path and not os.path.isabs(os.path.expanduser(hooks_path)):
        norm = os.path.normpath(hooks_path)
        if not norm.startswith(".."):
            paths.append(norm)
    return paths


def compile_config(common_dir: Path, main: Path | None, cfg: Any) -> Compiled:
    """Compile a loaded Config (see config.py) and store it in the cache when it came from `main`."""
    agents = {}
    for a in cfg.agents.values():
        wt = a.worktree if os.path.isabs(a.worktree) else os.path.join(str(main or common_dir), a.worktree)
        zone = a.compiled_zone()
        agents[a.name] = {
            "branch": a.branch,
            "worktree": os.path.normpath(wt),
            "zone": list(a.zone),
            "rx": [[p.regex, p.include] for p in zone.patterns],
        }
    data = {"agents": agents, "protected": protected_paths(common_dir)}
    if main is not None:
        _store(common_dir, main, data)
    return _from_json(data)


def _cache_file(common_dir: Path) -> Path:
    return common_dir / "fleet" / "zones.json"


def _cache_key(common_dir: Path, main: Path) -> list[Any]:
    return [CACHE_VERSION, str(main), _identity(main / CONFIG_NAME), _identity(common_dir / "config")]


def _store(common_dir: Path, main: Path, data: dict[str, Any]) -> None:
    path = _cache_file(common_dir)
    try:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".zones.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": _cache_key(common_dir, main), **data}))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only repository still gets correct answers, only slower ones


def load_compiled(common_dir: Path, main: Path) -> Compiled | None:
    """The compiled zones of the orchestrator's config; None when the repository has no fleet."""
    key = _cache_key(common_dir, main)
    if key[2] is None:
        return None
    try:
        data = json.loads(_cache_file(common_dir).read_text())
        if data.get("key") == key:
            return _from_json(data)
    except (OSError, ValueError, KeyError):
        pass
    from . import config  # cold path: parse the TOML, then remember the result

    cfg = config.load(main / CONFIG_NAME)
    return None if cfg is None else compile_config(common_dir, main, cfg)


# -- checks ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Violation:
    path: str
    what: str  # "modified", "renamed (from)", ...
    owners: tuple[str, ...]
    protected: bool
    commit: str | None = None


def check_paths(compiled: Compiled, agent: CompiledAgent, changes: Iterable[tuple[str, str]],
                commit: str | None = None) -> list[Violation]:
    """Violations among (what, path) pairs changed by `agent`."""
    found = []
    for what, path in changes:
        if compiled.is_protected(path):
            found.append(Violation(path, what, (), True, commit))
        elif not agent.owns(path):
            found.append(Violation(path, what, tuple(compiled.owners(path)), False, commit))
    return found


def staged_pairs(changes: Sequence[gitrepo.Change]) -> list[tuple[str, str]]:
    pairs = []
    for c in changes:
        if c.status == "R":
            pairs += [("renamed away", c.paths[0]), ("renamed to", c.paths[1])]
        elif c.status == "C":
            pairs.append(("copied to", c.paths[1]))
        else:
            pairs.append((STATUS_WORDS.get(c.status, "changed"), c.paths[0]))
    return pairs


def describe(agent: CompiledAgent, violations: Sequence[Violation], action: str) -> FleetError:
    """One error for all violations: each path, whose it is, and what to do."""
    lines = [f"{action}: agent '{agent.name}' changed {len(violations)} path(s) outside its zone"]
    for v in violations:
        at = f"{v.commit[:12]}: " if v.commit else ""
        if v.protected:
            whose = "the fleet's own configuration; only the orchestrator changes it"
        elif v.owners:
            whose = "owned by " + ", ".join(f"'{o}'" for o in v.owners)
        else:
            whose = "owned by no agent: the orchestrator's"
        lines.append(f"  {at}{v.what} {v.path}  ({whose})")
    hint = [f"zone of '{agent.name}': " + "  ".join(agent.zone)]
    if any(v.commit is None for v in violations):
        hint.append("take a path out of this commit with `git restore --staged -- PATH` (the edit stays in the work tree)")
    else:
        hint.append("rewrite those commits without the paths (git rebase -i), then push again")
    owners = sorted({o for v in violations for o in v.owners})
    if owners:
        hint.append("leave changes to another agent's paths to that agent (" + ", ".join(owners) + ")")
    hint.append("for anything else ask the orchestrator: a task for it, or a wider zone set from the main worktree")
    return FleetError("\n".join(lines), "\n".join(hint))


def check_range(compiled: Compiled, agent: CompiledAgent, tips: Sequence[str], exclude: Sequence[str],
                cwd: Path) -> list[Violation]:
    found = []
    for commit, paths in gitrepo.commits_touching(tips, exclude, cwd):
        found += check_paths(compiled, agent, [("changed", p) for p in paths], commit)
    return found
