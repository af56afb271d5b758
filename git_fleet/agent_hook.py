"""The hooks an agent CLI runs in an agent's worktree (installed by agent_settings.py): the zone
check at the edit, the shell guard, the agent's state for `git fleet-ps`, and its brief.

    PYTHON -I -S -c ... CLI gate     before a tool runs: exit 2 refuses it, stderr to the model
    PYTHON -I -S -c ... CLI event    a lifecycle event: reported; a brief added to the context

CLI is claude, gemini or codex. The hook event's JSON comes on stdin (its fields are each CLI's,
see CLIS). The gate runs on every edit of every agent, so this module imports what the commit
hook does and nothing more on the way of a Write or Edit (no git started: edit_gate.py); `-S`
keeps Python's site start-up (an editable install's finder alone costs 12 ms) off it, the
package's directory being on the command line. It fails closed: a gate that cannot decide (a
payload it cannot read, a configuration it cannot parse, a bug) refuses the tool call and says
why; an event that cannot be reported is dropped, never the agent held up.
"""

from __future__ import annotations

import contextlib
import os
import sys

from . import agent_state, fastjson, publish_start
from .agent_state import EXITED, IDLE, NEEDS_YOU, WORKING
from .errors import FleetError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .edit_gate import Place

REFUSE = 2  # the exit status with which every agent CLI that has hooks refuses a tool call


class Cli:
    """What one agent CLI's hook payloads look like."""

    def __init__(self, name: str, project_env: str, edits: dict[str, str], shells: dict[str, str],
                 states: dict[str, str | None], context_events: tuple[str, ...],
                 patches: tuple[str, ...] = ()):
        self.name = name
        self.patches = patches  # tools whose `command` is a patch (Codex's apply_patch): its files are judged
        self.project_env = project_env  # the variable the CLI sets to the directory it was started in
        self.edits = edits  # tool -> the input field that names the file it writes
        self.shells = shells  # tool -> the input field that holds the command
        self.states = states  # hook event -> the state it reports (None: the Notification rules)
        self.context_events = context_events  # events whose output can add to the model's context


CLIS = {
    "claude": Cli("claude", "CLAUDE_PROJECT_DIR",
                  {"Write": "file_path", "Edit": "file_path", "MultiEdit": "file_path", "NotebookEdit": "notebook_path"},
                  {"Bash": "command"},
                  {"SessionStart": IDLE, "UserPromptSubmit": WORKING, "PreToolUse": WORKING, "PostToolUse": WORKING,
                   "PostToolUseFailure": WORKING, "PermissionRequest": NEEDS_YOU, "Notification": None, "Stop": IDLE,
                   "StopFailure": IDLE, "SessionEnd": EXITED},
                  ("SessionStart", "UserPromptSubmit", "PostToolUse")),
    # Gemini CLI 0.61: tools write_file and replace (file_path, as the model wrote it: often relative)
    "gemini": Cli("gemini", "GEMINI_PROJECT_DIR", {"write_file": "file_path", "replace": "file_path"},
                  {"run_shell_command": "command"},
                  {"SessionStart": IDLE, "BeforeAgent": WORKING, "BeforeTool": WORKING, "AfterTool": WORKING,
                   "Notification": NEEDS_YOU, "AfterAgent": IDLE, "SessionEnd": EXITED},
                  ("SessionStart", "BeforeAgent", "AfterTool")),
    # Codex 0.171: edits are apply_patch calls whose files are named inside the patch
    "codex": Cli("codex", "CODEX_PROJECT_DIR", {}, {"Bash": "command", "exec_command": "cmd", "shell": "command"},
                 {"SessionStart": IDLE, "UserPromptSubmit": WORKING, "PreToolUse": WORKING, "PostToolUse": WORKING,
                  "PermissionRequest": NEEDS_YOU, "Stop": IDLE, "SessionEnd": EXITED},
                 ("SessionStart", "UserPromptSubmit", "PostToolUse"), ("apply_patch",)),
}

# the lines of a Codex patch that name a file it writes (codex-rs apply-patch's grammar)
_PATCH_FILE_LINES = ("*** Add File: ", "*** Update File: ", "*** Delete File: ", "*** Move to: ")


def patched_files(patch: str) -> list[str]:
    lines = [line.strip() for line in patch.splitlines()]  # (Codex trims a header line before reading it)
    return [line[len(prefix):].strip() for line in lines for prefix in _PATCH_FILE_LINES
            if line.startswith(prefix.strip() + " ")]


def _payload() -> dict[str, Any]:
    raw = sys.stdin.buffer.read()
    try:
        data = fastjson.loads(raw)
    except ValueError as e:
        raise FleetError(f"the agent CLI's hook input is not JSON ({e}): {raw[:80]!r}",
                         "the CLI may be a version whose hooks git-fleet does not know: git fleet-doctor") from None
    if not isinstance(data, dict):
        raise FleetError(f"the agent CLI's hook input is not a JSON object: {raw[:80]!r}",
                         "the CLI may be a version whose hooks git-fleet does not know: git fleet-doctor")
    return data


def _place(cli: Cli, payload: dict[str, Any], fleet: tuple[str, str] | None) -> Place | None:
    from .edit_gate import Place  # (after the payload is read: a malformed one costs no zone loading)

    start = os.environ.get(cli.project_env) or payload.get("cwd") or os.getcwd()
    return Place.find(str(start), fleet)


def _protected(place: Place) -> list[str]:
    """What no shell command of the agent may write, as it may name it."""
    from .check import CLI_SETTINGS, CONFIG_NAME  # (the shell guard's path only)
    from .edit_gate import HOME_SETTINGS  # (as above)

    common = place.common_dir
    home = os.path.expanduser("~")
    return [CONFIG_NAME, *CLI_SETTINGS, os.path.join(common, "hooks"), os.path.join(common, "config"), ".git",
            *(os.path.join(home, s) for s in HOME_SETTINGS), *(f"~/{s}" for s in HOME_SETTINGS)]


def gate(cli: Cli, payload: dict[str, Any], fleet: tuple[str, str] | None = None) -> FleetError | None:
    """Why the tool call may not run; None if it may (and its event reported either way)."""
    tool = payload.get("tool_name")
    tool_input = payload.get("tool_input")
    tool_input = tool_input if isinstance(tool_input, dict) else {}
    place = _place(cli, payload, fleet)
    if place is None:
        return None  # not an agent's worktree: nothing to keep it to
    refusal = _judge_tool(cli, place, str(tool or ""), tool_input, str(payload.get("cwd") or place.top))
    event = str(payload.get("hook_event_name") or "PreToolUse")
    agent_state.report(place.common_dir, place.agent.name, cli.name, event, WORKING, _session(payload),
                       tool=str(tool) if tool else None, use=_use(payload))
    _tell_machines(place, WORKING)
    if refusal is not None:
        agent_state.refused(place.common_dir, place.agent.name, refusal.message.split("\n", 1)[0])
    return refusal


# a tool the table does not know (an MCP server's, say) is judged as an edit when its name says
# it writes and its input names a path (a read of another agent's file is never refused)
_WRITES = ("write", "edit", "create", "delete", "remove", "move", "rename", "patch", "replace", "insert", "append")
_PATH_KEYS = ("file_path", "path", "notebook_path", "filename", "file", "target", "destination")


def _judge_tool(cli: Cli, place: Place, tool: str, tool_input: dict[str, Any], cwd: str) -> FleetError | None:
    if tool in cli.edits:
        path = tool_input.get(cli.edits[tool])
        if not isinstance(path, str) or not path:
            return FleetError(f"edit refused: {tool} names no file ({cli.edits[tool]} is missing)",
                              "name the file to write, inside your worktree")
        return place.judge(path, cwd, "write to" if tool == "Write" else "edit of")
    if tool in cli.patches:
        patch = tool_input.get("command") or tool_input.get("input") or ""
        files = patched_files(patch if isinstance(patch, str) else "\n".join(map(str, patch)))
        return next(filter(None, (place.judge(f, cwd, "patch of") for f in files)), None)
    if tool in cli.shells:
        from . import shell_guard  # (shell commands only: an edit's check needs no `re` or `shlex`)

        workdir = tool_input.get("workdir") or tool_input.get("dir_path")
        if isinstance(workdir, str) and workdir:
            real = os.path.realpath(os.path.join(cwd, workdir))
            if not real.startswith(place.top + "/") and real != place.top and place.foreign(real) is not None:
                return FleetError(f"command refused: it runs in {workdir}, where no agent writes",
                                  "run it in your worktree")
        command = tool_input.get(cli.shells[tool])
        if isinstance(command, list):
            import shlex  # (a command given as its words: Codex's shell tool)

            command = shlex.join(map(str, command))
        return shell_guard.judge(command, _protected(place)) if isinstance(command, str) else None
    lowered = tool.lower()
    if any(w in lowered for w in _WRITES):
        paths = [v for k in _PATH_KEYS if isinstance(v := tool_input.get(k), str) and v]
        return next(filter(None, (place.judge(p, cwd, "write to") for p in paths)), None)
    return None


def _use(payload: dict[str, Any]) -> str | None:
    use = payload.get("tool_use_id")
    return use if isinstance(use, str) and use else None


def _session(payload: dict[str, Any]) -> str | None:
    session = payload.get("session_id")
    return session if isinstance(session, str) and session else None


def _notification(payload: dict[str, Any]) -> str | None:
    """The state a Notification reports: a permission prompt or a question needs the person; the
    reminder that the agent waits for its next prompt is idle; the rest changes nothing."""
    kind = str(payload.get("notification_type") or "")
    message = str(payload.get("message") or "")
    if kind in ("permission_prompt", "elicitation_dialog") or (not kind and "permission" in message.lower()):
        return NEEDS_YOU
    if kind == "idle_prompt":
        return IDLE
    return None


def event(cli: Cli, payload: dict[str, Any], fleet: tuple[str, str] | None = None) -> str | None:
    """Report a lifecycle event; the text to add to the model's context, if any."""
    name = str(payload.get("hook_event_name") or "")
    if name not in cli.states:
        return None
    place = _place(cli, payload, fleet)
    if place is None:
        return None
    state = cli.states[name] if cli.states[name] is not None else _notification(payload)
    tool = payload.get("tool_name")
    asks = f"permission to use {tool}" if tool and state == NEEDS_YOU else None
    message = payload.get("message") or asks or payload.get("reason") or payload.get("error")
    agent_state.report(place.common_dir, place.agent.name, cli.name, name, state, _session(payload),
                       tool=str(tool) if tool else None, message=str(message) if message else None,
                       use=_use(payload))
    if state is not None:
        _tell_machines(place, state)
    if name in cli.context_events:
        from . import agent_brief  # (events that can add context only)

        return agent_brief.news(place, fresh=name == "SessionStart")
    return None


def _tell_machines(place: Place, state: str) -> None:
    """In a fleet across machines, a change of the agent's state is published in the background
    (its hold's next beat carries it to the other machines); one stat otherwise."""
    if publish_start.spans(place.common_dir) and agent_state.tell_machines(place.common_dir, place.agent.name, state):
        with contextlib.suppress(OSError):  # (a report: the next change, or commit, tells them)
            publish_start.start(place.common_dir)


def _context_output(event_name: str, text: str) -> str:
    inner = fastjson.dumps_flat({"hookEventName": event_name, "additionalContext": text})
    return f'{{"hookSpecificOutput": {inner}}}'


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 4) or args[0] not in CLIS or args[1] not in ("gate", "event"):
        print(f"error: usage: git_fleet.agent_hook {{{','.join(CLIS)}}} {{gate,event}} [COMMON_DIR MAIN_WORKTREE] "
              f"(not {' '.join(args)})", file=sys.stderr)
        return REFUSE
    cli, role = CLIS[args[0]], args[1]
    fleet = (args[2], args[3]) if len(args) == 4 else None
    try:
        payload = _payload()
        if role == "gate":
            refusal = gate(cli, payload, fleet)
            if refusal is not None:
                print(refusal.render(), file=sys.stderr)
                return REFUSE
            return 0
        text = event(cli, payload, fleet)
        if text:
            print(_context_output(str(payload.get("hook_event_name")), text))
        return 0
    except FleetError as e:
        if role == "event":
            return 0  # a report dropped
        print(e.render(), file=sys.stderr)
        return REFUSE
    except Exception as e:  # noqa: BLE001 (a bug: the gate fails closed, an event is dropped; the traceback goes to a log)
        from . import crash_log  # (only when a bug happened)

        lines = crash_log.report(f"git-fleet {args[0]} {role} hook", e)
        if role == "event":
            return 0
        print("\n".join(lines + ["error: so this tool call is refused (the fleet's hooks fail closed)"]),
              file=sys.stderr)
        return REFUSE
