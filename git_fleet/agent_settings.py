"""The agent CLIs' hooks installed in an agent's worktree, where the CLI reads them and git ignores
them, merged into what is there; checked, repaired and removed leaving the rest as it was.

Claude Code reads `.claude/settings.local.json` of the directory it starts in (the project's own
`.claude/settings.json`, which may be tracked, is never written). The file is put in the
repository's `info/exclude`, so no `git status` shows it and no `git add` takes it (the commit
hook refuses `git add -f`: `.claude/` is no agent's). Every worktree gets Claude Code's hooks
(a person may type `claude` in any of them); Gemini CLI's and Codex's go where the agent's
command runs them (agent_clis.py). A hook of ours is known by the module its command runs.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from . import durable
from .errors import FleetError

RUNNER = Path(__file__).resolve().parent / "agent_hook_run.py"
MARKER = "/git_fleet/agent_hook_run.py"
GATE_TIMEOUT = 10  # seconds our own `timeout` gives the gate before it refuses (the CLI's is longer)
CLI_TIMEOUT = 30  # seconds the CLI waits; past it, Claude Code lets the tool call through


class Target:
    """Where one agent CLI reads hooks from in a worktree, and which of its events we hook."""

    def __init__(self, cli: str, path: Path, gate_event: str, events: tuple[str, ...], timeout: int):
        self.cli = cli
        self.path = path  # relative to the worktree
        self.gate_event = gate_event  # before a tool runs: the gate, on every tool (the state says which)
        self.events = events
        self.timeout = timeout  # in the CLI's unit (Gemini CLI: milliseconds)

    @property
    def excluded(self) -> tuple[str, ...]:
        """Its lines in info/exclude: the file, and the temporary files a write of it leaves when it
        is killed midway (durable.py: .NAME.RANDOM.tmp beside it)."""
        path = self.path.as_posix()
        head, _, name = path.rpartition("/")
        return "/" + path, f"/{head + '/' if head else ''}.{name}.*.tmp"

    def hooks(self, fleet: Fleet) -> dict[str, list[dict[str, Any]]]:
        """Our entries in the file's `hooks`, by event, for the fleet (common dir, main worktree)."""
        def entry(role: str, matcher: str | None = None) -> dict[str, Any]:
            hook = {"type": "command", "command": hook_command(self.cli, role, fleet), "timeout": self.timeout}
            return {**({"matcher": matcher} if matcher else {}), "hooks": [hook]}

        hooks = {self.gate_event: [entry("gate", "*")]}
        hooks.update({event: [entry("event")] for event in self.events})
        return hooks


CLAUDE = Target("claude", Path(".claude", "settings.local.json"), "PreToolUse",
                ("SessionStart", "UserPromptSubmit", "PostToolUse", "PostToolUseFailure", "PermissionRequest",
                 "Notification", "Stop", "StopFailure", "SessionEnd"), CLI_TIMEOUT)
# Gemini CLI reads no local variant: its project file, written only where the project does not track it
GEMINI = Target("gemini", Path(".gemini", "settings.json"), "BeforeTool",
                ("SessionStart", "BeforeAgent", "AfterTool", "Notification", "AfterAgent", "SessionEnd"),
                CLI_TIMEOUT * 1000)
CODEX = Target("codex", Path(".codex", "hooks.json"), "PreToolUse",
               ("SessionStart", "UserPromptSubmit", "PostToolUse", "PermissionRequest", "Stop", "SessionEnd"),
               CLI_TIMEOUT)
TARGETS = {t.cli: t for t in (CLAUDE, GEMINI, CODEX)}


Fleet = tuple[str, str]  # the fleet a hook is installed for: its common dir and main worktree


def hook_command(cli: str, role: str, fleet: Fleet) -> str:
    """The command a CLI runs: this Python, without its site start-up (-S) or the environment's
    say (-I), running agent_hook_run.py for the fleet; the gate under a timeout, and refusing
    when anything fails (Claude Code lets a tool call through when a hook cannot run: exit 127,
    its timeout), an event never failing the agent's turn (a Stop hook that exits 2 would keep
    it going). Programs are named by their absolute paths: PATH is the agent's to change."""
    # (the interpreter itself, whichever of its names ran this: the hook needs no site, venv or not)
    python = os.path.realpath(sys.executable)
    command = shlex.join([python, "-I", "-S", str(RUNNER), cli, role, *fleet])
    if role == "gate":
        timeout = shutil.which("timeout")
        limit = f"{shlex.quote(os.path.realpath(timeout))} -k 1 {GATE_TIMEOUT} " if timeout else ""
        # (Gemini CLI and Codex let a tool call through on exit 2 with nothing on stderr)
        return (f"{limit}{command}; s=$?; case $s in 0|2) exit $s;; esac; "
                "echo \"error: the fleet's zone check failed (exit $s), so this tool call is refused\" >&2; exit 2")
    return f"{command} || true"


def _ours(hook: Any) -> bool:
    return isinstance(hook, dict) and MARKER in str(hook.get("command", ""))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise FleetError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as e:
        line = getattr(e, "lineno", "?")
        raise FleetError(f"{path}:{line}: not valid JSON ({e}); the fleet's hooks cannot be merged into it",
                         "fix or remove the file, then: git fleet-doctor --fix") from None
    if not isinstance(data, dict):
        raise FleetError(f"{path}: not a JSON object", "fix or remove the file, then: git fleet-doctor --fix")
    return data


def _without_ours(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without our hooks: each of ours taken out of its group (a person may have added a
    hook of their own beside it), a group left empty dropped, an event left empty dropped."""
    hooks = data.get("hooks")
    if not isinstance(hooks, dict):
        return data
    kept = {}
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            kept[event] = groups
            continue
        rest = []
        for group in groups:
            inner = group.get("hooks") if isinstance(group, dict) else None
            if isinstance(inner, list) and any(_ours(h) for h in inner):
                group = {**group, "hooks": [h for h in inner if not _ours(h)]}
                if not group["hooks"]:
                    continue
            rest.append(group)
        if rest:
            kept[event] = rest
    out = {k: v for k, v in data.items() if k != "hooks"}
    return {**out, "hooks": kept} if kept else out


def _ours_in(group: Any) -> bool:
    inner = group.get("hooks") if isinstance(group, dict) else None
    return isinstance(inner, list) and any(_ours(h) for h in inner)


def write_through(path: Path | str, text: str, mode: int | None = None) -> None:
    """Replace a file's contents, following a symlink to it (a person's dotfiles) rather than
    putting a file in the link's place."""
    durable.replace(os.path.realpath(path), text, mode=mode)


def install(worktree: Path, target: Target, fleet: Fleet) -> Path:
    """Our hooks in the worktree's settings file for `target`, the rest of it kept."""
    path = worktree / target.path
    data = _without_ours(read_json(path) or {})
    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict):
        raise FleetError(f"{path}: its \"hooks\" is not an object", "fix it, then: git fleet-doctor --fix")
    for event, entries in target.hooks(fleet).items():
        existing = hooks.get(event, [])
        hooks[event] = (existing if isinstance(existing, list) else [existing]) + entries
    data["hooks"] = hooks
    path.parent.mkdir(exist_ok=True)
    write_through(path, json.dumps(data, indent=2) + "\n")
    return path


def uninstall(worktree: Path, target: Target) -> Path | None:
    """Our hooks out of the worktree's settings; the file (and its directory) gone if nothing
    else is in it."""
    path = worktree / target.path
    data = read_json(path)
    if data is None:
        return None
    rest = _without_ours(data)
    if rest == data:
        return None
    if rest:
        write_through(path, json.dumps(rest, indent=2) + "\n")
    else:
        path.unlink()
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
    return path


def only_ours(worktree: Path, rel: str) -> bool:
    """Whether `rel` (as `git status` names an ignored file or directory) is a CLI's settings file
    in the worktree, or a directory of just that file, holding our hooks and nothing else."""
    if rel.endswith("/"):
        inside = [p.relative_to(worktree).as_posix() for p in (worktree / rel).iterdir()] \
            if (worktree / rel).is_dir() else []
        return len(inside) == 1 and only_ours(worktree, inside[0])
    if rel not in {t.path.as_posix() for t in TARGETS.values()}:
        return False
    try:
        data = read_json(worktree / rel)
    except FleetError:
        return False
    return data is not None and data != {} and _without_ours(data) == {}


def problems(worktree: Path, target: Target, fleet: Fleet) -> list[str]:
    """What is wrong with a CLI's hooks in the worktree: missing, stale (another Python, an older
    command), or switched off by a setting it reads; [] when they hold."""
    found = []
    path = worktree / target.path
    try:
        data = read_json(path)
    except FleetError as e:
        return [e.message]
    if data is None:
        return [f"{path} is missing: the agent's edits are checked only at the commit"]
    hooks = data.get("hooks")
    hooks = hooks if isinstance(hooks, dict) else {}
    for event, entries in target.hooks(fleet).items():
        present = [e for e in hooks.get(event, []) if _ours_in(e)] if isinstance(hooks.get(event), list) else []
        if present != entries:
            found.append(f"{path}: the fleet's {event} hook is {'stale' if present else 'missing'}")
            break
    if target is CLAUDE:
        for name in ("settings.json", "settings.local.json"):
            if read_json_quietly(worktree / ".claude" / name).get("disableAllHooks"):
                found.append(f"{worktree / '.claude' / name} sets disableAllHooks: every hook, the fleet's too, is off")
    return found


def read_json_quietly(path: Path) -> dict[str, Any]:
    """A settings file's JSON, or {} where it is missing or unreadable (a check, not an edit)."""
    try:
        return read_json(path) or {}
    except FleetError:
        return {}


def exclude(common_dir: Path, targets: tuple[Target, ...] = tuple(TARGETS.values())) -> bool:
    """The CLIs' settings files in the repository's info/exclude (once); True if any was added."""
    path = common_dir / "info" / "exclude"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    have = text.splitlines()
    missing = [p for t in targets for p in t.excluded if p not in have]
    if not missing:
        return False
    path.parent.mkdir(exist_ok=True)
    sep = "" if not text or text.endswith("\n") else "\n"
    durable.replace(path, f"{text}{sep}{EXCLUDE_NOTE}\n" + "".join(f"{m}\n" for m in missing))
    return True


EXCLUDE_NOTE = "# git-fleet: the agent CLIs' hooks in each agent's worktree"


def unexclude(common_dir: Path) -> None:
    path = common_dir / "info" / "exclude"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    ours = {p for t in TARGETS.values() for p in t.excluded}
    kept: list[str] = []
    in_ours = False  # (only the lines under our note: the same line of the person's own stays)
    for line in lines:
        if line == EXCLUDE_NOTE:
            in_ours = True
            continue
        in_ours = in_ours and line in ours
        if not in_ours:
            kept.append(line)
    if kept != lines:
        durable.replace(path, "\n".join(kept) + ("\n" if kept else ""))
