"""The agent CLIs' trust of the fleet's worktrees: each runs no hook (so no zone check at the
edit) in a workspace its person has not trusted, and each keeps that answer in its own file.
`git fleet-up --trust` gives the answers a person would give in each CLI's dialog, and
`git fleet-doctor` says which are missing; each is undone in the CLI's own way.

- Claude Code: `projects[PATH].hasTrustDialogAccepted` in ~/.claude.json, keyed by the main
  worktree for every linked worktree of it (read from its code, confirmed by a real session).
- Gemini CLI: `~/.gemini/trustedFolders.json` (or $GEMINI_CLI_TRUSTED_FOLDERS_PATH), a
  TRUST_FOLDER rule per worktree (worktrees are the main worktree's siblings, not inside it).
- Codex: `[projects."MAIN"] trust_level = "trusted"` in $CODEX_HOME/config.toml (~/.codex),
  keyed by the main worktree, and each hook of the fleet's hooks.json trusted by its hash
  (`[hooks.state."FILE:EVENT:GROUP:INDEX"] trusted_hash`, as its /hooks dialog records it).
  Only tables that are missing are appended; one that says otherwise is left to the person.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from . import durable
from .agent_settings import CODEX, read_json, read_json_quietly, write_through
from .errors import FleetError

CODEX_EVENTS = {"PreToolUse": "pre_tool_use", "PostToolUse": "post_tool_use", "PermissionRequest": "permission_request",
                "SessionStart": "session_start", "UserPromptSubmit": "user_prompt_submit", "Stop": "stop",
                "SessionEnd": "session_end"}
CODEX_NO_MATCHER = {"UserPromptSubmit", "Stop"}  # events whose matcher Codex ignores, and leaves out of the hash


def _home() -> Path:
    return Path(os.path.expanduser("~"))


# -- Claude Code ------------------------------------------------------------------------------------

def claude_trusts(main: Path) -> bool:
    data = read_json_quietly(_home() / ".claude.json")
    projects = data.get("projects")
    projects = projects if isinstance(projects, dict) else {}
    here = main.resolve()
    return any(isinstance(e := projects.get(str(p)), dict) and e.get("hasTrustDialogAccepted") is True
               for p in (here, *here.parents))


def claude_trust(main: Path) -> Path:
    state = _home() / ".claude.json"
    data = read_json(state) or {}
    if not claude_trusted(data, main):
        raise FleetError(f"{state}: its \"projects\" is not an object", "fix it, or run claude once in the main worktree")
    write_through(state, json.dumps(data, indent=2) + "\n", mode=0o600)
    return state


def claude_trusted(data: dict[str, Any], main: Path) -> bool:
    """The trust of the main worktree (so of its linked worktrees) set in the state `data` of a
    ~/.claude.json, or of an agent's own (agent_home.py); False where its "projects" is not an object."""
    projects = data.setdefault("projects", {})
    if not isinstance(projects, dict):
        return False
    entry = projects.setdefault(str(main.resolve()), {})
    if not isinstance(entry, dict):
        entry = projects[str(main.resolve())] = {}
    entry["hasTrustDialogAccepted"] = True
    return True


# -- Gemini CLI -------------------------------------------------------------------------------------

def _gemini_file() -> Path:
    return Path(os.environ.get("GEMINI_CLI_TRUSTED_FOLDERS_PATH") or _home() / ".gemini" / "trustedFolders.json")


def gemini_trusts(worktree: Path) -> bool:
    if os.environ.get("GEMINI_CLI_TRUST_WORKSPACE") == "true":
        return True
    here = worktree.resolve()

    def covers(path: str, level: str) -> bool:  # (the longest rule that covers the folder decides, as Gemini CLI's)
        return here.is_relative_to((Path(path).parent if level == "TRUST_PARENT" else Path(path)).resolve())

    best = max(((len(path), level) for path, level in read_json_quietly(_gemini_file()).items()
                if isinstance(level, str) and covers(path, level)), default=(0, None))
    return best[1] in ("TRUST_FOLDER", "TRUST_PARENT")


def gemini_trust(worktrees: list[Path]) -> tuple[Path, list[str]]:
    """A TRUST_FOLDER rule per worktree; one the person set to DO_NOT_TRUST is kept, and named."""
    path = _gemini_file()
    rules = read_json(path) or {}
    refused = gemini_trusted(rules, worktrees)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_through(path, json.dumps(rules, indent=2) + "\n", mode=0o600)
    return path, refused


def gemini_trusted(rules: dict[str, Any], worktrees: list[Path]) -> list[str]:
    """The rules of a trustedFolders.json (the person's, or an agent's own) given a TRUST_FOLDER
    rule per worktree where they have none; the worktrees whose rule says DO_NOT_TRUST, kept."""
    refused = [str(w.resolve()) for w in worktrees if rules.get(str(w.resolve())) == "DO_NOT_TRUST"]
    for worktree in worktrees:
        rules.setdefault(str(worktree.resolve()), "TRUST_FOLDER")
    return refused


# -- Codex ------------------------------------------------------------------------------------------

def _codex_config() -> Path:
    return Path(os.environ.get("CODEX_HOME") or _home() / ".codex") / "config.toml"


def _codex_tables(main: Path) -> dict[str, dict[str, str]]:
    """The tables that trust the main worktree and each hook of the fleet's hooks.json there."""
    tables = {f'projects."{main.resolve()}"': {"trust_level": "trusted"}}
    hooks_json = main / CODEX.path
    data = read_json(hooks_json) or {}
    hooks = data.get("hooks") if isinstance(data.get("hooks"), dict) else {}
    for event, groups in (hooks or {}).items():
        if event not in CODEX_EVENTS or not isinstance(groups, list):
            continue
        for g, group in enumerate(groups):
            for h, hook in enumerate(group.get("hooks", []) if isinstance(group, dict) else []):
                tables[f'hooks.state."{hooks_json}:{CODEX_EVENTS[event]}:{g}:{h}"'] = {
                    "trusted_hash": _codex_hash(event, group.get("matcher"), hook)}
    return tables


def _codex_hash(event: str, matcher: str | None, hook: dict[str, Any]) -> str:
    """As Codex 0.171 fingerprints a command hook (codex-rs hooks, command_hook_hash): SHA-256 of
    its identity as canonical JSON."""
    handler: dict[str, Any] = {"type": "command", "command": hook.get("command"), "async": bool(hook.get("async", False)),
                               "timeout": max(int(hook.get("timeout", 600)), 1)}
    if hook.get("statusMessage") is not None:
        handler["statusMessage"] = hook["statusMessage"]
    identity: dict[str, Any] = {"event_name": CODEX_EVENTS[event], "hooks": [handler]}
    if matcher is not None and event not in CODEX_NO_MATCHER:
        identity["matcher"] = matcher
    return "sha256:" + hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":"),
                                                 ensure_ascii=False).encode()).hexdigest()


def _codex_has(config: dict[str, Any], table: str) -> dict[str, Any] | None:
    kind, name = _split(table)
    group = config.get("hooks", {}).get("state", {}) if kind == "hooks" else config.get(kind, {})
    found = group.get(name) if isinstance(group, dict) else None
    return found if isinstance(found, dict) else None


def codex_untrusted(main: Path) -> list[str]:
    """The tables of _codex_tables that Codex's config does not have as they should be."""
    config = _codex_read()
    return [t for t, want in _codex_tables(main).items()
            if any((_codex_has(config, t) or {}).get(k) != v for k, v in want.items())]


def _codex_read() -> dict[str, Any]:
    try:
        return tomllib.loads(_codex_config().read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def codex_trust(main: Path) -> tuple[Path, list[str]]:
    """Append the missing tables (keys written by tomli_w, so any path is quoted right); the ones
    present with another value, and any the file cannot take as appended tables (it declares
    `projects` inline, say), are returned for the person to change. The file is checked to read
    back with the values before it is written, and never left unreadable."""
    path = Path(os.path.realpath(_codex_config()))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    new, conflicting = codex_trusted(text, main)
    if new != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        durable.replace(path, new, mode=0o600)
    return path, conflicting


def codex_trusted(text: str, main: Path) -> tuple[str, list[str]]:
    """The text of a config.toml (the person's, or an agent's own) with the missing tables
    appended, and the tables it cannot take (codex_trust): the text as it was where none is missing."""
    import tomli_w  # (writing TOML: --trust, and an agent's own config)

    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        config = {}
    missing: dict[str, Any] = {}
    conflicting = []
    for table, want in _codex_tables(main).items():
        have = _codex_has(config, table)
        if have is None:
            kind, name = _split(table)
            (missing.setdefault("hooks", {}).setdefault("state", {}) if kind == "hooks"
             else missing.setdefault(kind, {}))[name] = want
        elif any(have.get(k) != v for k, v in want.items()):
            conflicting.append(table)
    if not missing:
        return text, conflicting
    sep = "" if not text or text.endswith("\n") else "\n"
    new = text + sep + "\n# git-fleet: its agents' worktrees and hooks, trusted\n" + tomli_w.dumps(missing)
    try:
        tomllib.loads(new)
    except tomllib.TOMLDecodeError:
        return text, conflicting + [f"{kind}.{name}" for kind, tables in missing.items() for name in tables]
    return new, conflicting


def _split(table: str) -> tuple[str, str]:
    kind, _, name = table.partition(".")
    return kind, name.removeprefix("state.").strip('"')
