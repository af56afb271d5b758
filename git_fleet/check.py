"""Zone checks of a staged change, a push and a receive, and the compiled zone cache.

The commit hook runs on every commit of every agent, so the zones are compiled once (literal
patterns into string tests, the rest into regular expressions) and kept in
`<common dir>/fleet/zones.cache`, keyed by the contents of the orchestrator's `.gitfleet.toml`
and of the repository's git config. marshal reads it with no import to pay for. A warm hook
reads that file, asks git once for the staged change and matches: no TOML, no pygit2, no click,
and no `re` unless a zone has wildcards.
"""

from __future__ import annotations

import marshal
import os
import sys

from . import durable
from .errors import FleetError
from .gateway import plumbing
from .match import literal_match

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

    from .config import Config
    from .zones import Zone

CACHE_VERSION = 11
CONFIG_NAME = ".gitfleet.toml"
# the agent CLIs' settings in a worktree hold the hooks that keep an agent in its zone (and can
# switch them off): no agent changes them, at the edit or at the commit (agent_settings.py)
CLI_SETTINGS = (".claude", ".gemini", ".codex")
STATUS_WORDS = {"A": "added", "M": "modified", "D": "deleted", "T": "changed type of", "C": "copied to",
                "U": "unmerged", "R": "renamed"}


class CompiledAgent:
    __slots__ = ("_rules", "branch", "ignore_case", "name", "registered", "worktree", "zone")

    def __init__(self, name: str, branch: str, worktree: str, zone: Sequence[str], rules: Sequence[Sequence[Any]],
                 ignore_case: bool = False, registered: bool = False):
        self.name = name
        self.branch = branch
        self.worktree = worktree  # absolute, normalised
        self.registered = registered  # the worktree is this clone's record of it, not where the config puts it
        self.zone = tuple(zone)
        self._rules: list[list[Any]] = [list(r) for r in rules]  # [kind, text, include] in zone order; kind "re": text is a regex
        self.ignore_case = ignore_case  # literals are folded (zones.fold), regexes say (?ai)

    def owns(self, path: str) -> bool:
        key = path.encode("utf-8", "surrogateescape").decode("latin-1")  # as zones.as_bytes_text
        if self.ignore_case:
            key = key.translate(_FOLD)
        for i in range(len(self._rules) - 1, -1, -1):
            kind, text, include = self._rules[i]
            if kind == "re":
                import re  # only zones with wildcards pay for it

                if isinstance(text, str):
                    text = self._rules[i][1] = re.compile(text)
                if text.match(key):
                    return bool(include)
            elif literal_match(kind, text, key):
                return bool(include)
        return False


# zones.FOLD, without importing zones (and `re`) on the hook's path
_FOLD = {c: c + 32 for c in range(65, 91)}


class Compiled:
    __slots__ = ("agents", "base", "ignore_case", "protected", "union")

    def __init__(self, agents: dict[str, CompiledAgent], protected: Sequence[str], base: str,
                 union: CompiledAgent | None = None, ignore_case: bool = False):
        self.agents = agents
        self.protected = tuple(protected)  # paths (files or directories) no agent may change
        self.base = base
        self.union = union  # shared files that every agent may change
        self.ignore_case = ignore_case

    def agent_for(self, head_ref: str | None, worktree: str | None) -> CompiledAgent | None:
        """The agent a worktree belongs to: the one registered at its path, whatever it has
        checked out (another agent's branch included); else the one whose branch it has."""
        if worktree is not None:
            here = os.path.realpath(worktree)
            mine = [a for a in self.agents.values() if a.worktree and os.path.realpath(a.worktree) == here]
            mine = [a for a in mine if a.registered] or mine  # a record beats where the config would put one
            if len(mine) > 1 and head_ref and head_ref.startswith("refs/heads/"):
                # two agents at one path (a registration left by a worktree moved away): its branch decides
                mine = [a for a in mine if a.branch == head_ref[11:]] or mine
            if mine:
                return mine[0]
        if head_ref and head_ref.startswith("refs/heads/"):
            return self.agent_by_branch(head_ref[11:])
        return None

    def agent_by_branch(self, branch: str) -> CompiledAgent | None:
        return next((a for a in self.agents.values() if a.branch == branch), None)

    def owners(self, path: str) -> list[str]:
        return [a.name for a in self.agents.values() if a.owns(path)]

    def is_protected(self, path: str) -> bool:
        if self.ignore_case:
            path = path.translate(_FOLD)
            return any(path == p.translate(_FOLD) or path.startswith(p.rstrip("/").translate(_FOLD) + "/")
                       for p in self.protected)
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.protected)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _from_data(data: dict[str, Any]) -> Compiled:
    fold = bool(data.get("ignore_case"))
    agents = {name: CompiledAgent(name, a["branch"], a["worktree"], a["zone"], a["rules"], fold, a["registered"])
              for name, a in data["agents"].items()}
    union = data.get("union")
    return Compiled(agents, data["protected"], data["base"],
                    CompiledAgent("union", "", "", union["zone"], union["rules"], fold) if union else None, fold)


def protected_paths(common_dir: str, hooks_path: str | None = None) -> list[str]:
    """The fleet config, the agent CLIs' settings, and the hooks directory where core.hooksPath
    puts it inside the checkout."""
    paths = [CONFIG_NAME, *CLI_SETTINGS]
    if hooks_path is None:
        hooks_path = plumbing.local_settings(common_dir)[0]
    if hooks_path and not os.path.isabs(os.path.expanduser(hooks_path)):
        norm = os.path.normpath(hooks_path)
        if not norm.startswith(".."):
            paths.append(norm)
    return paths


def rules_of(zone: Zone) -> list[list[Any]]:
    """A zones.Zone as the cache stores it: [kind, text, include] per pattern, in order."""
    return [[*(p.literal or ("re", p.regex)), p.include] for p in zone.patterns]


def compile_config(common_dir: str, main: str | None, cfg: Config) -> Compiled:
    """Compile a loaded Config (see config.py) and store it in the cache when it came from `main`."""
    git_config = _read(os.path.join(common_dir, "config"))  # read before git is asked about it
    hooks_path, registered = plumbing.local_settings(common_dir)
    from .templates import expand_worktree  # (off the warm path: compiling only)

    agents = {}
    for a in cfg.agents.values():
        # the worktree that is this agent's whatever it has checked out: the one this clone
        # registered, else where the config puts it (as fleet commands find it: Fleet.tree_of)
        wt = registered.get(a.name) or (expand_worktree(cfg.worktree_template(a), a.name, os.path.basename(main))
                                         if main else "")
        zone = a.compiled_zone()
        agents[a.name] = {
            "branch": a.branch,
            "worktree": os.path.normpath(os.path.join(main or common_dir, wt)) if wt else "",
            "registered": a.name in registered,
            "zone": list(a.zone),
            "rules": rules_of(zone),
        }
    data = {"agents": agents, "protected": protected_paths(common_dir, hooks_path or ""), "base": cfg.base,
            "ignore_case": cfg.ignore_case}
    if cfg.union:
        from .zones import Zone  # (compiling only: the warm hook never needs the pattern compiler)

        data["union"] = {"zone": list(cfg.union), "rules": rules_of(Zone(cfg.union, cfg.ignore_case))}
    if main is not None and cfg.text:
        _store(common_dir, _cache_key(main, cfg.text.encode("utf-8"), git_config), data)
    return _from_data(data)


def _cache_file(common_dir: str) -> str:
    return os.path.join(common_dir, "fleet", "zones.cache")


def _cache_key(main: str, fleet_config: bytes, git_config: bytes | None) -> list[Any]:
    """The compiled zones hold for exactly these contents of .gitfleet.toml and the git config.
    Contents, not file times and sizes: an edit in place within one timestamp tick keeps both,
    and the zones would be compiled from one text and filed under the identity of another. The
    files are small; reading them costs what a stat does."""
    return [CACHE_VERSION, sys.version_info[:2], main, fleet_config, git_config]


def _store(common_dir: str, key: list[Any], data: dict[str, Any]) -> None:
    path = _cache_file(common_dir)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        durable.replace(path, marshal.dumps({"key": key, **data}))
    except OSError:
        pass  # a read-only repository still gets correct answers, only slower ones


def load_compiled(common_dir: str, main: str, cached: bool = True) -> Compiled | None:
    """The compiled zones of the orchestrator's config; None when the repository has no fleet.
    cached=False: compiled from the file, whatever the cache says (and the cache refreshed)."""
    raw = _read(os.path.join(main, CONFIG_NAME))
    if raw is None:
        return None
    if cached:
        try:
            with open(_cache_file(common_dir), "rb") as fh:
                data = marshal.load(fh)
            if data.get("key") == _cache_key(main, raw, _read(os.path.join(common_dir, "config"))):
                return _from_data(data)
        except (OSError, ValueError, EOFError, TypeError, KeyError, AttributeError):
            pass  # none, or unreadable: compile it
    from pathlib import Path

    from . import config  # cold path: parse the TOML (the text just read), then remember the result

    return compile_config(common_dir, main, config.parse_bytes(Path(main, CONFIG_NAME), raw))


# -- checks ------------------------------------------------------------------------------------------

class Violation:
    __slots__ = ("commit", "owners", "path", "protected", "what")

    def __init__(self, path: str, what: str, owners: Sequence[str], protected: bool, commit: str | None = None):
        self.path = path
        self.what = what  # "modified", "renamed to", ...
        self.owners = tuple(owners)
        self.protected = protected
        self.commit = commit


def checkable(path: str) -> bool:
    """Whether a path from a tree is one git would check out: no empty, `.` or `..` component,
    and no `.git` (as git's fsck and verify_path see it: any case, and the names NTFS and HFS+
    read as `.git`). A tree made with plumbing can hold such entries, and a zone would otherwise
    be matched against `src/backend/../../README.md` as if it were below src/backend."""
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return False
        name = part.lower() if part.isascii() else part.translate(_HFS_IGNORED).lower()
        if name.rstrip(". ") in (".git", "git~1"):
            return False
    return True


# the code points HFS+ ignores in a name (git's utf8.c, is_hfs_dotgit)
_HFS_IGNORED: dict[int, None] = dict.fromkeys([*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070),
                                               0xFEFF])


def check_paths(compiled: Compiled, agent: CompiledAgent, changes: Iterable[tuple[str, str]],
                commit: str | None = None) -> list[Violation]:
    """Violations among (what, path) pairs changed by `agent`."""
    found = []
    for what, path in changes:
        if not checkable(path) or compiled.is_protected(path):
            found.append(Violation(path, what, (), True, commit))
        elif not agent.owns(path) and not (compiled.union and compiled.union.owns(path)):
            found.append(Violation(path, what, tuple(compiled.owners(path)), False, commit))
    return found


def staged_pairs(changes: Sequence[tuple[str, tuple[str, ...]]]) -> list[tuple[str, str]]:
    """(what, path) for each path a change touches: both sides of a rename."""
    pairs = []
    for status, paths in changes:
        if status == "R":
            pairs += [("renamed away", paths[0]), ("renamed to", paths[1])]
        elif status == "C":
            pairs.append(("copied to", paths[1]))
        else:
            pairs.append((STATUS_WORDS.get(status, "changed"), paths[0]))
    return pairs


_ESCAPES = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r", 34: '\\"', 92: "\\\\"}


def quote(path: str) -> str:
    """A path as `git status` shows it (core.quotePath off): in double quotes, C-escaped, when it
    holds a space, a quote, a backslash or a control character, so that a trailing space or a
    newline is seen; otherwise as it is."""
    if not any(c in ' "\\' or c < " " or c == "\x7f" for c in path):
        return path
    return '"' + "".join(_ESCAPES.get(ord(c)) or (f"\\{ord(c):03o}" if c < " " or c == "\x7f" else c)
                         for c in path) + '"'


def unquote(text: str) -> str:
    """A path as quote() shows it, back to what it is."""
    if not text.startswith('"'):
        return text
    return text[1:-1].encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")


def describe(agent: CompiledAgent, violations: Sequence[Violation], action: str, edit: bool = False) -> FleetError:
    """One error for all violations: each path, whose it is, and what to do (`edit`: refused
    before the file was touched, by an agent CLI's hook)."""
    lines = [f"{action}: agent '{agent.name}' changed {len(violations)} path(s) outside its zone"]
    for v in violations:
        at = f"{v.commit[:12]}: " if v.commit else ""
        if not checkable(v.path):
            whose = "not a path git can check out: a tree made by hand"
        elif v.protected and v.path.lower() == CONFIG_NAME:
            whose = "the fleet's own configuration; only the orchestrator changes it"
        elif v.protected and v.path.split("/", 1)[0].lower() in CLI_SETTINGS:
            whose = "an agent CLI's settings, which hold the fleet's hooks; only the orchestrator changes them"
        elif v.protected:
            whose = "the repository's hooks; only the orchestrator changes them"
        elif v.owners:
            whose = "owned by " + ", ".join(f"'{o}'" for o in v.owners)
        else:
            whose = "owned by no agent: the orchestrator's"
        lines.append(f"  {at}{v.what} {quote(v.path)}  ({whose})")
    hint = [f"zone of '{agent.name}': " + "  ".join(agent.zone)]
    if edit:
        hint.append("the file is unchanged; `git fleet-who PATH` says whose a path is")
    elif any(v.commit is None for v in violations):
        hint.append("take a path out of this commit with `git restore --staged -- PATH` (the edit stays in the work tree)")
    else:
        hint.append("rewrite those commits without the paths (git rebase -i), then push again")
    owners = sorted({o for v in violations for o in v.owners})
    if owners:
        hint.append("leave changes to another agent's paths to that agent (" + ", ".join(owners) + ")")
    hint.append("for anything else ask the orchestrator: a task for it, or a wider zone set from the main worktree")
    return FleetError("\n".join(lines), "\n".join(hint))


def check_range(compiled: Compiled, agent: CompiledAgent, tips: Sequence[str], exclude: Sequence[str],
                cwd: str) -> list[Violation]:
    """Violations of every commit reachable from `tips` and not from `exclude`, each distinct path
    decided once (long-lived branches touch the same files again and again)."""
    return check_history(compiled, agent, plumbing.commits_touching(tips, exclude, cwd))


def check_history(compiled: Compiled, agent: CompiledAgent, history: list[tuple[str, list[str]]]) -> list[Violation]:
    """Violations among (commit, paths) pairs, each distinct path decided once."""
    distinct = {p for _, paths in history for p in paths}
    bad = {v.path: v for v in check_paths(compiled, agent, [("changed", p) for p in distinct])}
    if not bad:
        return []
    return [Violation(p, "changed", bad[p].owners, bad[p].protected, commit)
            for commit, paths in history for p in paths if p in bad]
