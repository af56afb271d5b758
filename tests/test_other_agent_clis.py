"""The fleet's hooks in the two other agent CLIs git-fleet installs them for, Gemini CLI and Codex
(git_fleet/agent_settings.py: GEMINI, CODEX; git_fleet/agent_hook.py: CLIS), at two levels:

- the hook commands that `git fleet-set NAME --command 'gemini ...'` (or `codex ...`) wrote into
  the agent's worktree, read from the file the CLI reads, run the way the CLI runs them and given
  the JSON the CLI sends (fast; always run);
- the real CLIs, driven offline: `gemini -p` and `codex exec` talk to a scripted model server in
  this file (127.0.0.1, a free port), which makes them call their edit tool on a path outside
  the agent's zone and on one inside, and records what the CLI sent back. Skipped when the CLI
  is not installed; .ci/run installs both, pinned to the versions these tests were written
  against (GEMINI_CLI_VERSION and CODEX_VERSION there).

How each CLI runs a command hook (read in Gemini CLI 0.61's bundle, hookRunner.js; seen from a
hook of Codex 0.171's): `bash -c COMMAND` in the session's directory, the payload on stdin; Gemini
CLI sets GEMINI_PROJECT_DIR, GEMINI_CWD and CLAUDE_PROJECT_DIR to that directory, Codex sets no
such variable. Both refuse the tool call on exit 2 with a reason on stderr, which the model reads.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest

from git_fleet import agent_state, agent_trust
from helpers import Result, Sandbox, private_tmux
from model_server import read_body

ROOT = Path(__file__).resolve().parent.parent
CI = (ROOT / ".ci/run").read_text()


def _pin(variable: str) -> str:
    found = re.search(rf"^{variable}=(\S+)$", CI, re.MULTILINE)
    return found.group(1) if found else "?"


GEMINI_VERSION = _pin("GEMINI_CLI_VERSION")
CODEX_VERSION = _pin("CODEX_VERSION")
GEMINI_SETTINGS = Path(".gemini", "settings.json")
CODEX_HOOKS = Path(".codex", "hooks.json")
MARK = "/git_fleet/agent_hook_run.py"  # in the command of every hook of the fleet's
TIMEOUT = 60  # seconds for one run of a real CLI (2 to 5 s here)


# -- the fleet ----------------------------------------------------------------------------------


@dataclass
class HookedAgent:
    """An agent of the fleet whose command runs Gemini CLI or Codex, and the fleet's hooks in its
    worktree as that CLI reads them."""
    sb: Sandbox
    name: str
    cli: str  # gemini or codex
    worktree: Path
    settings: Path
    hooks: dict[str, dict[str, Any]]  # event -> the fleet's entry in the settings file

    @classmethod
    def of(cls, sb: Sandbox, name: str, cli: str) -> HookedAgent:
        worktree = sb.root / f"repo-{name}"
        # (Codex 0.171 reads a linked worktree's project hooks from the main worktree's .codex/)
        settings = worktree / GEMINI_SETTINGS if cli == "gemini" else sb.repo / CODEX_HOOKS
        data = json.loads(settings.read_text())
        hooks = {}
        for event, entries in data["hooks"].items():
            [ours] = [e for e in entries if any(MARK in h["command"] for h in e["hooks"])]
            hooks[event] = ours
        return cls(sb, name, cli, worktree, settings, hooks)

    def command(self, event: str) -> str:
        [hook] = self.hooks[event]["hooks"]
        assert hook["type"] == "command"
        return str(hook["command"])

    @property
    def gate_event(self) -> str:
        return "BeforeTool" if self.cli == "gemini" else "PreToolUse"

    @property
    def session_id(self) -> str:
        return f"{self.cli}-session-{self.name}"

    def payload(self, event: str, cwd: Path, **fields: Any) -> dict[str, Any]:
        """The JSON the CLI sends its hook for `event`: the fields every event carries, and `fields`."""
        base: dict[str, Any] = {"session_id": self.session_id, "cwd": str(cwd), "hook_event_name": event}
        if self.cli == "gemini":  # (hookEventHandler.createBaseInput)
            base.update(transcript_path=str(self.sb.root / "chat.json"), timestamp="2026-01-01T00:00:00.000Z")
        else:
            base.update(transcript_path=str(self.sb.root / "rollout.jsonl"), model="gpt-5.5",
                        permission_mode="bypassPermissions")
            if event not in ("SessionStart", "SessionEnd"):
                base["turn_id"] = "turn-1"
        return {**base, **fields}

    def run(self, event: str, *, stdin: str | bytes | None = None, cwd: Path | None = None, **fields: Any) -> Result:
        """Run the fleet's hook for `event` as the CLI runs it (see the module's docstring), with
        the payload made of `fields`, or `stdin` as it is."""
        where = cwd or self.worktree
        raw = json.dumps(self.payload(event, where, **fields)) if stdin is None else stdin
        env = dict(os.environ)
        if self.cli == "gemini":
            env.update(GEMINI_PROJECT_DIR=str(where), GEMINI_CWD=str(where), CLAUDE_PROJECT_DIR=str(where),
                       GEMINI_SESSION_ID=self.session_id)
        proc = subprocess.run(["bash", "-c", self.command(event)], input=raw.encode() if isinstance(raw, str) else raw,
                              cwd=where, env=env, capture_output=True, timeout=30)
        return Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))

    def gate(self, tool: str, cwd: Path | None = None, **tool_input: Any) -> Result:
        return self.run(self.gate_event, cwd=cwd, tool_name=tool, tool_input=tool_input)

    def events(self) -> list[dict[str, Any]]:
        """The agent's events log, as its hooks wrote it."""
        log = self.sb.repo / ".git/fleet/agents" / self.name / "events"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def refused(self) -> list[str]:
        log = self.sb.repo / ".git/fleet/agents" / self.name / "refused"
        return log.read_text().splitlines() if log.exists() else []


@dataclass
class TwoClis:
    sb: Sandbox
    gemini: HookedAgent  # "backend", zone src/backend/**
    codex: HookedAgent  # "web", zone src/frontend/**


def _two_clis(sb: Sandbox, gemini: str = "gemini", codex: str = "codex") -> TwoClis:
    sb.add_agent("backend", "src/backend/**")
    sb.add_agent("web", "src/frontend/**")
    sb.fleet("set", "backend", "--command", f"{gemini} --model {{model}}")
    sb.fleet("set", "web", "--command", f"{codex} --model {{model}}")
    return TwoClis(sb, HookedAgent.of(sb, "backend", "gemini"), HookedAgent.of(sb, "web", "codex"))


@pytest.fixture
def clis(fleet_repo: Sandbox) -> TwoClis:
    """Two agents with zones, backend running Gemini CLI and web running Codex."""
    return _two_clis(fleet_repo)


def test_the_hooks_go_when_no_agent_runs_that_cli_and_uninstall_leaves_the_rest(clis: TwoClis) -> None:
    sb = clis.sb
    mine = {"hooks": {"Stop": [{"hooks": [{"type": "command", "command": "echo mine"}]}]}, "theme": "dark"}
    settings = clis.gemini.worktree / ".claude/settings.local.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "theme": "dark",
                                    "hooks": {**json.loads(settings.read_text())["hooks"], **mine["hooks"]}}))
    sb.fleet("set", "web", "--command", "claude --model {model}")  # no agent runs codex now
    assert not (sb.repo / CODEX_HOOKS).exists()
    sb.fleet("set", "web", "--command", "codex --model {model}")
    assert (sb.repo / CODEX_HOOKS).is_file()
    sb.fleet("init", "--uninstall")
    assert json.loads(settings.read_text()) == mine  # the person's own kept, ours gone
    for where in (sb.repo, clis.gemini.worktree, clis.codex.worktree):
        assert not (where / CODEX_HOOKS).exists() and not (where / GEMINI_SETTINGS).exists()
        status = sb.git("status", "--porcelain", "--untracked-files=all", cwd=where).out.splitlines()
        # (the config is uncommitted in this fixture; the person's own settings are theirs, and show)
        theirs = ["?? .claude/settings.local.json"] if where == clis.gemini.worktree else []
        assert [line for line in status if line != "?? .gitfleet.toml"] == theirs, (where, status)
    assert not (clis.codex.worktree / ".codex").exists() and not (clis.codex.worktree / ".claude").exists()
    assert "/.claude/settings.local.json" not in (sb.repo / ".git/info/exclude").read_text()


def refusal(res: Result) -> str:
    """The reason a gate refused with: exit 2 and a reason on stderr (both CLIs let the call
    through on exit 2 with nothing on stderr)."""
    assert res.code == 2, f"the tool call should have been refused:\n{res}"
    assert res.err.strip(), f"exit 2 with nothing on stderr lets the call through:\n{res}"
    assert "Traceback" not in res.err and res.out == "", str(res)
    return res.err


def allowed(res: Result) -> None:
    assert res.code == 0, f"the tool call should have been let through:\n{res}"
    assert res.err == "", str(res)


def clean(sb: Sandbox, worktree: Path) -> None:
    """Nothing in the worktree's `git status`: the CLIs' settings files are excluded, and the
    hooks wrote nothing there."""
    assert sb.git("status", "--porcelain", "--untracked-files=all", cwd=worktree).out == ""


def _patch(*lines: str) -> str:
    return "\n".join(["*** Begin Patch", *lines, "*** End Patch"]) + "\n"


# -- the installed hooks, run as the CLI runs them ----------------------------------------------


def test_the_hooks_are_installed_where_each_cli_reads_them_and_git_ignores_them(clis: TwoClis) -> None:
    sb = clis.sb
    gemini, codex = clis.gemini, clis.codex
    assert set(gemini.hooks) == {"BeforeTool", "SessionStart", "BeforeAgent", "AfterTool", "Notification",
                                 "AfterAgent", "SessionEnd"}
    assert set(codex.hooks) == {"PreToolUse", "SessionStart", "UserPromptSubmit", "PostToolUse",
                                "PermissionRequest", "Stop", "SessionEnd"}
    for agent in (gemini, codex):
        assert agent.hooks[agent.gate_event]["matcher"] == "*"  # every tool: the gate says which it judges
        assert agent.command(agent.gate_event).endswith("exit 2")  # it fails closed, with a reason on stderr
        assert all("matcher" not in agent.hooks[e] for e in agent.hooks if e != agent.gate_event)
        assert not (agent.worktree / (CODEX_HOOKS if agent.cli == "gemini" else GEMINI_SETTINGS)).exists()
        clean(sb, agent.worktree)
    # each CLI's unit: Gemini CLI's timeout is in milliseconds, Codex's in seconds; both longer
    # than the 10 s the gate gives itself, so the gate refuses before the CLI gives up on it
    assert gemini.hooks["BeforeTool"]["hooks"][0]["timeout"] > 10_000
    assert 10 < codex.hooks["PreToolUse"]["hooks"][0]["timeout"] <= 600
    exclude = (sb.repo / ".git/info/exclude").read_text().splitlines()
    assert "/.gemini/settings.json" in exclude and "/.codex/hooks.json" in exclude
    # Claude Code's go into every agent's worktree; the main worktree gets none
    assert (gemini.worktree / ".claude/settings.local.json").is_file()
    assert not (sb.repo / GEMINI_SETTINGS).exists() and (sb.repo / CODEX_HOOKS).is_file()
    assert not (codex.worktree / CODEX_HOOKS).exists() and (codex.worktree / ".codex").is_dir()  # (see agent_clis)


def test_gemini_edits_outside_the_zone_are_refused_naming_the_path_and_its_owner(clis: TwoClis) -> None:
    sb, agent = clis.sb, clis.gemini
    wt = agent.worktree
    app = wt / "src/frontend/app.js"

    err = refusal(agent.gate("write_file", file_path="src/frontend/new.js", content="x\n"))  # relative
    assert "edit refused: agent 'backend'" in err and "src/frontend/new.js" in err and "owned by 'web'" in err
    assert "zone of 'backend': src/backend/**" in err

    err = refusal(agent.gate("write_file", file_path=str(app), content="x\n"))  # absolute
    assert "src/frontend/app.js" in err and "owned by 'web'" in err

    err = refusal(agent.gate("replace", file_path="src/backend/../frontend/app.js", instruction="rename",
                             old_string="app()", new_string="hacked()"))  # through ..
    assert "src/frontend/app.js" in err and "owned by 'web'" in err

    err = refusal(agent.gate("replace", file_path=str(wt / "src/../docs/guide.md"), instruction="x",
                             old_string="#", new_string="##"))
    assert "docs/guide.md" in err and "owned by no agent" in err

    err = refusal(agent.gate("write_file", file_path="../repo-web/src/frontend/app.js", content="x\n"))
    assert str(sb.root / "repo-web/src/frontend/app.js") in err and "the worktree of agent 'web'" in err

    err = refusal(agent.gate("replace", file_path=str(sb.repo / "README.md"), instruction="x", old_string="#",
                             new_string="##"))
    assert str(sb.repo / "README.md") in err and "main worktree" in err

    err = refusal(agent.gate("write_file", file_path=".gemini/settings.json", content="{}\n"))
    assert ".gemini/settings.json" in err and "agent CLI's settings" in err

    # Gemini CLI started in a subdirectory: relative paths are relative to it
    err = refusal(agent.gate("write_file", cwd=wt / "src", file_path="frontend/new.js", content="x\n"))
    assert "src/frontend/new.js" in err and "owned by 'web'" in err

    assert app.read_text() == "app()\n" and not (wt / "src/frontend/new.js").exists()
    assert len(agent.refused()) == 8 and all("edit refused" in line for line in agent.refused())
    clean(sb, wt)


def test_gemini_edits_inside_the_zone_are_let_through_untouched(clis: TwoClis) -> None:
    sb, agent = clis.sb, clis.gemini
    wt = agent.worktree
    api = wt / "src/backend/api.py"
    allowed(agent.gate("write_file", file_path="src/backend/new.py", content="x = 1\n"))
    allowed(agent.gate("write_file", file_path=str(wt / "src/backend/deep/er/new.py"), content="x = 1\n"))
    allowed(agent.gate("replace", file_path=str(api), instruction="v2", old_string="pass", new_string="return 2"))
    allowed(agent.gate("replace", cwd=wt / "src/backend", file_path="api.py", instruction="v2", old_string="pass",
                       new_string="return 2"))
    allowed(agent.gate("write_file", file_path=str(sb.root / "scratch.txt"), content="x\n"))  # a temporary file
    allowed(agent.gate("read_file", file_path=str(sb.repo / "README.md")))  # reading is no edit
    allowed(agent.gate("run_shell_command", command="git status && ls src", description="look"))
    assert api.read_text() == "def api(): pass\n" and not (wt / "src/backend/new.py").exists()
    assert not (sb.root / "scratch.txt").exists() and agent.refused() == []
    clean(sb, wt)


def test_codex_patches_outside_the_zone_are_refused_naming_the_path_and_its_owner(clis: TwoClis) -> None:
    sb, agent = clis.sb, clis.codex
    wt = agent.worktree

    err = refusal(agent.gate("apply_patch", command=_patch("*** Add File: src/backend/new.py", "+x = 1")))
    assert "edit refused: agent 'web'" in err and "src/backend/new.py" in err and "owned by 'backend'" in err
    assert "zone of 'web': src/frontend/**" in err

    err = refusal(agent.gate("apply_patch", command=_patch(
        "*** Update File: src/backend/api.py", "@@", "-def api(): pass", "+def api(): return 2")))
    assert "src/backend/api.py" in err and "owned by 'backend'" in err

    # a file of its zone, moved out of it
    err = refusal(agent.gate("apply_patch", command=_patch(
        "*** Update File: src/frontend/app.js", "*** Move to: src/backend/app.js", "@@", "-app()", "+app(2)")))
    assert "src/backend/app.js" in err and "owned by 'backend'" in err

    # one file in the zone and one outside it: the whole patch is refused, naming the one outside
    err = refusal(agent.gate("apply_patch", command=_patch(
        "*** Add File: src/frontend/ok.js", "+ok()", "*** Delete File: docs/guide.md")))
    assert "docs/guide.md" in err and "owned by no agent" in err and "src/frontend/ok.js" not in err

    err = refusal(agent.gate("apply_patch", command=_patch("*** Add File: src/frontend/../../README.md", "+x")))
    assert "README.md" in err and "owned by no agent" in err

    err = refusal(agent.gate("apply_patch", command=_patch(f"*** Add File: {sb.root / 'repo-backend/src/x.py'}",
                                                           "+x")))
    assert "the worktree of agent 'backend'" in err

    err = refusal(agent.gate("apply_patch", command=_patch("*** Add File: .codex/hooks.json", "+{}")))
    assert ".codex/hooks.json" in err and "agent CLI's settings" in err

    # as a function call's `input` rather than the custom tool's `command`, from a subdirectory
    err = refusal(agent.gate("apply_patch", cwd=wt / "src", input=_patch("*** Add File: backend/y.py", "+y = 1")))
    assert "src/backend/y.py" in err and "owned by 'backend'" in err

    assert (wt / "src/backend/api.py").read_text() == "def api(): pass\n" and not (wt / "src/backend/new.py").exists()
    assert not (wt / "src/frontend/ok.js").exists() and not (wt / "src/backend/app.js").exists()
    assert len(agent.refused()) == 8
    clean(sb, wt)


def test_codex_patches_inside_the_zone_are_let_through_untouched(clis: TwoClis) -> None:
    sb, agent = clis.sb, clis.codex
    wt = agent.worktree
    allowed(agent.gate("apply_patch", command=_patch("*** Add File: src/frontend/new.js", "+new()")))
    allowed(agent.gate("apply_patch", command=_patch(
        "*** Update File: src/frontend/app.js", "*** Move to: src/frontend/main.js", "@@", "-app()", "+app(2)",
        f"*** Add File: {wt / 'src/frontend/abs.js'}", "+abs()", "*** Delete File: src/frontend/old.js")))
    allowed(agent.gate("apply_patch", cwd=wt / "src/frontend", command=_patch("*** Add File: here.js", "+here()")))
    allowed(agent.gate("Bash", command="git diff --stat && npm test"))
    allowed(agent.gate("exec_command", cmd="ls src"))
    allowed(agent.gate("web_search", query="zones"))
    assert (wt / "src/frontend/app.js").read_text() == "app()\n" and not (wt / "src/frontend/new.js").exists()
    assert not (wt / "src/frontend/main.js").exists() and agent.refused() == []
    clean(sb, wt)


def test_codex_patch_headers_codex_accepts_with_padding_are_judged_too(clis: TwoClis) -> None:
    """Codex's apply_patch parser trims each hunk header (codex-rs apply-patch parser.rs:
    `lines[0].trim()`, then strip_prefix "*** Add File: "), so a padded header writes the file."""
    err = refusal(clis.codex.gate("apply_patch", command=_patch("  *** Add File: src/backend/pad.py", "+x")))
    assert "src/backend/pad.py" in err


def test_a_commit_without_its_hooks_is_refused_in_the_shell(clis: TwoClis) -> None:
    for agent, tool in ((clis.gemini, "run_shell_command"), (clis.codex, "Bash")):
        for command in ("git commit --no-verify -m wip", "git add -A && git commit -qnm wip",
                        "cd src && git -c user.name=x commit --no-verify"):
            err = refusal(agent.gate(tool, command=command))
            assert "command refused: `git commit` without its hooks" in err, command
        err = refusal(agent.gate(tool, command="git config core.hooksPath /dev/null"))
        assert "core.hookspath" in err.lower()
        allowed(agent.gate(tool, command="git commit -m 'wip: hooks run'"))
        assert len(agent.refused()) == 4
        clean(clis.sb, agent.worktree)
    # Codex's exec_command tool, by the name and field the CLIS table knows it by
    assert "--no-verify" in refusal(clis.codex.gate("exec_command", cmd="git commit --no-verify -m wip"))


def _malformed(agent: HookedAgent, stdin: bytes) -> None:
    err = refusal(agent.run(agent.gate_event, stdin=stdin))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "error: the agent CLI's hook input is not" in errors[0], err
    assert all(line.startswith(("error: ", "hint: ")) for line in err.splitlines()), err
    # an event with such a payload is dropped, never holding the agent up
    assert agent.run("SessionStart", stdin=stdin) == Result(0, "", "")
    assert agent.events() == [] and agent.refused() == []


def test_a_malformed_payload_is_refused_with_one_clear_error(clis: TwoClis) -> None:
    for agent in (clis.gemini, clis.codex):
        for stdin in (b"", b"not json at all", b"[1, 2]", b'"write_file"', b"\xff\xfe{}", b"{} {}"):
            _malformed(agent, stdin)


def test_a_payload_cut_short_is_refused_with_one_clear_error(clis: TwoClis) -> None:
    for agent in (clis.gemini, clis.codex):
        _malformed(agent, b'{"tool_name": "write_file", "tool_input": {"file_path": "src/x.py"')


def test_a_payload_that_names_no_file_is_refused(clis: TwoClis) -> None:
    gemini, codex = clis.gemini, clis.codex
    assert "write_file names no file" in refusal(gemini.gate("write_file", content="x\n"))
    assert "replace names no file" in refusal(gemini.gate("replace", file_path=""))
    assert "names no file" in refusal(gemini.gate("write_file", file_path=["src/frontend/app.js"]))
    assert "names no file" in refusal(gemini.run("BeforeTool", tool_name="write_file", tool_input="src/x.py"))
    allowed(codex.gate("apply_patch", command="not a patch"))  # (no file to write: Codex refuses it itself)


def test_a_session_start_hook_answers_in_the_clis_format_and_reports_the_session(clis: TwoClis) -> None:
    """Both CLIs read an event hook's stdout as JSON: nothing, or hookSpecificOutput with
    additionalContext (the agent's brief)."""
    for agent in (clis.gemini, clis.codex):
        res = agent.run("SessionStart", source="startup")
        assert res.code == 0 and res.err == "", str(res)
        if res.out.strip():
            out = json.loads(res.out)["hookSpecificOutput"]
            assert out["hookEventName"] == "SessionStart" and isinstance(out["additionalContext"], str)
        [event] = agent.events()
        assert (event["cli"], event["event"], event["state"], event["session"]) == (
            agent.cli, "SessionStart", "idle", agent.session_id)
        # a session its person started by hand (no FLEET_AGENT in its environment), outside tmux,
        # is taken at its word; the session id is the reported one
        row = ps(clis.sb)[agent.name]
        assert (row["state"], row["session_id"], row["reported"], row["refused"]) == (
            "idle", agent.session_id, True, 0)


def test_hooks_run_outside_an_agents_worktree_judge_and_report_nothing(clis: TwoClis) -> None:
    sb, agent = clis.sb, clis.gemini
    outside = sb.root / "elsewhere"
    outside.mkdir()
    for where in (sb.repo, outside):  # the main worktree (the orchestrator's); no repository
        allowed(agent.gate("write_file", cwd=where, file_path="src/frontend/app.js", content="x\n"))
        assert agent.run("SessionStart", cwd=where, source="startup") == Result(0, "", "")
    assert agent.events() == [] and agent.refused() == []


# -- the agent's state in git fleet-ps ----------------------------------------------------------


def _stand_ins_in_tmux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private tmux server's place, and stand-ins named gemini and codex that wait (so that an
    agent's pane stays live): the directory that holds them."""
    private_tmux(tmp_path, monkeypatch)
    stand_ins = tmp_path / "bin"
    stand_ins.mkdir()
    for name in ("gemini", "codex"):
        (stand_ins / name).write_text("#!/bin/sh\nexec sleep 600\n")
        (stand_ins / name).chmod(0o755)
    return stand_ins


@pytest.fixture
def live_clis(fleet_repo: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TwoClis]:
    """The two agents started by `git fleet-up` in a private tmux server; the `gemini` and `codex`
    their commands run are stand-ins that wait, so that their panes stay live while the test plays
    the CLIs' hook events (ps shows a reported state only while the agent's pane is live)."""
    stand_ins = _stand_ins_in_tmux(tmp_path, monkeypatch)
    two = _two_clis(fleet_repo, str(stand_ins / "gemini"), str(stand_ins / "codex"))
    fleet_repo.fleet("up", "--detach", "--stagger", "0")
    try:
        yield two
    finally:
        subprocess.run(["tmux", "kill-server"], capture_output=True)


def ps(sb: Sandbox) -> dict[str, dict[str, Any]]:
    return {row["agent"]: row for row in json.loads(sb.fleet("ps", "--json").out)}


def test_gemini_cli_lifecycle_events_show_in_ps(live_clis: TwoClis) -> None:
    sb, agent = live_clis.sb, live_clis.gemini
    row = ps(sb)["backend"]
    assert (row["running"], row["reported"], row["state"]) == (True, False, "running")

    def after(event: str, **fields: Any) -> dict[str, Any]:
        res = agent.run(event, **fields)
        assert res.code == 0 and res.err == "", str(res)
        return ps(sb)["backend"]

    row = after("SessionStart", source="startup")
    assert (row["state"], row["session_id"], row["reported"], row["refused"]) == ("idle", agent.session_id, True, 0)
    assert after("BeforeAgent", prompt="add the endpoint")["state"] == "working"
    row = after("BeforeTool", tool_name="write_file", tool_input={"file_path": "src/backend/x.py", "content": ""})
    assert (row["state"], row["tool"]) == ("working", "write_file")
    refusal(agent.gate("write_file", file_path="src/frontend/x.js", content=""))
    assert ps(sb)["backend"]["refused"] == 1
    row = after("AfterTool", tool_name="write_file", tool_input={"file_path": "src/backend/x.py", "content": ""},
                tool_response={"llmContent": "Successfully created"})
    assert row["state"] == "working"
    row = after("Notification", notification_type="ToolPermission", message="Tool run_shell_command requires confirmation",
                details={"type": "exec", "title": "Confirm Shell Command", "command": "make"})
    assert (row["state"], row["message"]) == ("needs you", "Tool run_shell_command requires confirmation")
    row = after("AfterAgent", prompt="add the endpoint", prompt_response="Done.", stop_hook_active=False)
    assert (row["state"], row["refused"], row["session_id"]) == ("idle", 1, agent.session_id)
    assert after("SessionEnd", reason="exit")["state"] == "exited"
    assert ps(sb)["web"]["reported"] is False  # the other agent's state is its own
    assert [(e["event"], e["state"]) for e in agent.events()] == [
        ("SessionStart", "idle"), ("BeforeAgent", "working"), ("BeforeTool", "working"), ("BeforeTool", "working"),
        ("AfterTool", "working"), ("Notification", "needs you"), ("AfterAgent", "idle"), ("SessionEnd", "exited")]
    assert {(e["cli"], e["session"]) for e in agent.events()} == {("gemini", agent.session_id)}
    clean(sb, agent.worktree)


def test_codex_lifecycle_events_show_in_ps(live_clis: TwoClis) -> None:
    sb, agent = live_clis.sb, live_clis.codex

    def after(event: str, **fields: Any) -> dict[str, Any]:
        res = agent.run(event, **fields)
        assert res.code == 0 and res.err == "", str(res)
        return ps(sb)["web"]

    row = after("SessionStart", source="startup")
    assert (row["state"], row["session_id"], row["reported"]) == ("idle", agent.session_id, True)
    assert after("UserPromptSubmit", prompt="build the page")["state"] == "working"
    refusal(agent.gate("apply_patch", command=_patch("*** Add File: src/backend/x.py", "+x")))
    row = ps(sb)["web"]
    assert (row["state"], row["tool"], row["refused"]) == ("working", "apply_patch", 1)
    row = after("PermissionRequest", tool_name="Bash", tool_input={"command": "npm install"})
    assert (row["state"], row["tool"], row["message"]) == ("needs you", "Bash", "permission to use Bash")
    row = after("PostToolUse", tool_name="Bash", tool_input={"command": "npm install"}, tool_response="ok",
                tool_use_id="call_1")
    assert row["state"] == "working"
    row = after("Stop", stop_hook_active=False, last_assistant_message="Done.")
    assert (row["state"], row["refused"], row["session_id"]) == ("idle", 1, agent.session_id)
    # another session in the same pane (codex resume): ps follows the id the hooks report
    row = after("SessionStart", session_id="codex-session-2", source="resume")
    assert (row["state"], row["session_id"]) == ("idle", "codex-session-2")
    assert after("SessionEnd", session_id="codex-session-2", reason="other")["state"] == "exited"
    assert [(e["event"], e["state"]) for e in agent.events()] == [
        ("SessionStart", "idle"), ("UserPromptSubmit", "working"), ("PreToolUse", "working"),
        ("PermissionRequest", "needs you"), ("PostToolUse", "working"), ("Stop", "idle"),
        ("SessionStart", "idle"), ("SessionEnd", "exited")]
    clean(sb, agent.worktree)


# -- the real CLIs, offline ---------------------------------------------------------------------


@dataclass
class Exchange:
    """One request the scripted model got; `turn`: the index of the script's turn it was answered
    with (None: a side request, answered without using the script)."""
    method: str
    path: str
    body: Any
    turn: int | None = None


class ScriptedModel:
    """A stand-in for a model's API on 127.0.0.1 (a free port), served from threads of this
    process: each of the agent's turns gets the next turn of `script`, a side request a short
    answer, and every request is recorded. A subclass speaks one API (answer)."""

    EXHAUSTED = "scripted model: the script has no more turns."

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.exchanges: list[Exchange] = []
        self.overrun = 0
        self._next = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # (the CLIs keep their connection between turns)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # recorded, not printed

            def _handle(self) -> None:
                status, content_type, payload = owner.answer(self.command, self.path, read_body(self))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), name="scripted-model",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def url(self) -> str:
        assert self._httpd is not None, "the scripted model is not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def next_turn(self, exchange: Exchange) -> Any:
        """The script's next turn for one of the agent's turns, or None once it is used up."""
        with self._lock:
            self.exchanges.append(exchange)
            if self._next >= len(self.script):
                self.overrun += 1
                return None
            exchange.turn, self._next = self._next, self._next + 1
            return self.script[exchange.turn]

    def side(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    @property
    def turns(self) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if e.turn is not None]

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self.script) - self._next

    def answer(self, method: str, path: str, body: Any) -> tuple[int, str, bytes]:
        raise NotImplementedError


def _sse(events: list[dict[str, Any]], named: bool) -> bytes:
    return "".join((f"event: {e['type']}\n" if named else "") + f"data: {json.dumps(e)}\n\n" for e in events).encode()


class GeminiModel(ScriptedModel):
    """The Gemini API as Gemini CLI 0.61 uses it with an API key. The agent's turns are
    POST /v1beta/models/MODEL:streamGenerateContent?alt=sse with its tools, answered with one
    server-sent event (a candidate whose part is a functionCall, or a text); the tool results come
    back as functionResponse parts of the last content. Side requests (the next-speaker check, a
    session summary) go to :generateContent and get a JSON text; :countTokens gets a count. A turn
    of the script is a function call {"name", "args"} or a text."""

    def answer(self, method: str, path: str, body: Any) -> tuple[int, str, bytes]:
        exchange = Exchange(method, path, body)
        usage = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}

        def candidate(part: dict[str, Any]) -> dict[str, Any]:
            return {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP",
                                    "index": 0}], "usageMetadata": usage}

        if method == "POST" and ":streamGenerateContent" in path and isinstance(body, dict) and body.get("tools"):
            turn = self.next_turn(exchange)
            part = {"functionCall": turn} if isinstance(turn, dict) else {"text": turn or self.EXHAUSTED}
            return 200, "text/event-stream", _sse([candidate(part)], named=False)
        self.side(exchange)
        if method == "POST" and ":countTokens" in path:
            return 200, "application/json", json.dumps({"totalTokens": 10}).encode()
        if method == "POST" and (":generateContent" in path or ":streamGenerateContent" in path):
            data = candidate({"text": json.dumps({"reasoning": "the turn is done", "next_speaker": "user"})})
            if ":stream" in path:
                return 200, "text/event-stream", _sse([data], named=False)
            return 200, "application/json", json.dumps(data).encode()
        error = {"error": {"code": 404, "message": f"scripted model: no {path}", "status": "NOT_FOUND"}}
        return 404, "application/json", json.dumps(error).encode()

    def tool_results(self) -> list[dict[str, Any]]:
        """The functionResponse the CLI sent back for each scripted call, in order: {name, id, response}."""
        found = []
        for exchange in self.turns:
            last = exchange.body["contents"][-1]
            found += [part["functionResponse"] for part in last.get("parts", []) if "functionResponse" in part]
        return found


class CodexModel(ScriptedModel):
    """The OpenAI Responses API as Codex 0.171 uses it (wire_api = "responses"): each turn is
    POST /v1/responses with the whole conversation in `input`, answered with the server-sent
    events response.created, response.output_item.done (one item) and response.completed; tool
    outputs come back as custom_tool_call_output (or function_call_output) items of `input`. A
    turn of the script is a patch for apply_patch (a str starting "*** Begin Patch"), a function
    call {"name", "arguments"}, or a text."""

    def __init__(self, script: list[Any]) -> None:
        super().__init__(script)
        self._calls = itertools.count(1)

    def answer(self, method: str, path: str, body: Any) -> tuple[int, str, bytes]:
        exchange = Exchange(method, path, body)
        if method == "POST" and path.split("?")[0].endswith("/responses") and isinstance(body, dict):
            tools = [t for t in body.get("tools") or () if isinstance(t, dict)]
            if tools:
                turn = self.next_turn(exchange)
            else:
                self.side(exchange)
                turn = "OK"
            response = f"resp_{len(self.exchanges)}"
            call = f"call_{next(self._calls)}"
            item: dict[str, Any]
            if isinstance(turn, str) and turn.startswith("*** Begin Patch"):
                [patch_tool] = [t for t in tools if t.get("name") == "apply_patch"]
                item = ({"type": "custom_tool_call", "call_id": call, "name": "apply_patch", "input": turn}
                        if patch_tool.get("type") == "custom" else
                        {"type": "function_call", "call_id": call, "name": "apply_patch",
                         "arguments": json.dumps({"input": turn})})
            elif isinstance(turn, dict):
                item = {"type": "function_call", "call_id": call, "name": turn["name"],
                        "arguments": json.dumps(turn["arguments"])}
            else:
                item = {"type": "message", "role": "assistant", "id": f"msg_{response}",
                        "content": [{"type": "output_text", "text": turn or self.EXHAUSTED}]}
            usage = {"input_tokens": 10, "input_tokens_details": None, "output_tokens": 5,
                     "output_tokens_details": None, "total_tokens": 15}
            events = [{"type": "response.created", "response": {"id": response}},
                      {"type": "response.output_item.done", "item": item},
                      {"type": "response.completed", "response": {"id": response, "usage": usage}}]
            return 200, "text/event-stream", _sse(events, named=True)
        self.side(exchange)
        if method == "GET" and path.split("?")[0].endswith("/models"):
            return 200, "application/json", json.dumps({"object": "list", "data": [], "models": []}).encode()
        return 404, "application/json", json.dumps({"error": {"message": f"scripted model: no {path}"}}).encode()

    def tool_results(self) -> list[dict[str, Any]]:
        """The output item the CLI sent back for each scripted call, in order: {type, call_id, output}."""
        seen: dict[str, dict[str, Any]] = {}
        for exchange in self.turns:
            for item in exchange.body.get("input") or ():
                if isinstance(item, dict) and str(item.get("type", "")).endswith("_call_output"):
                    seen.setdefault(str(item["call_id"]), item)
        return list(seen.values())


@dataclass
class RealCli:
    """Runs an installed agent CLI non-interactively, in a process group of its own that is ended
    with everything in it (hooks, shells) however the run ends, with the test's HOME."""
    sb: Sandbox
    binary: str
    home: Path
    seconds: list[float] = field(default_factory=list)

    def run(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float = TIMEOUT) -> Result:
        start = time.monotonic()
        res = self.sb.run_group([self.binary, *args], cwd, env, timeout)
        self.seconds.append(time.monotonic() - start)
        return res


def _installed(name: str, package: str, version: str, sb: Sandbox, home: Path, monkeypatch: pytest.MonkeyPatch,
               variables: tuple[str, ...]) -> RealCli:
    binary = shutil.which(name)
    if binary is None:
        pytest.skip(f"{name} is not installed: .ci/run installs it (npm install -g {package}@{version})")
    for var in list(os.environ):
        if var.startswith(variables):
            monkeypatch.delenv(var)  # the caller's keys, endpoints and settings
    return RealCli(sb, binary, home)


@pytest.fixture
def gemini(fleet_repo: Sandbox, hermetic: Path, monkeypatch: pytest.MonkeyPatch) -> RealCli:
    """The installed Gemini CLI with nothing of the caller's setup: its user settings in the test's
    HOME choose a Gemini API key and switch update checks and usage statistics off."""
    cli = _installed("gemini", "@google/gemini-cli", GEMINI_VERSION, fleet_repo, hermetic, monkeypatch,
                     ("GEMINI_", "GOOGLE_", "CLAUDE"))
    settings = hermetic / ".gemini/settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
        "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False},
    }))
    return cli


def test_the_installed_gemini_cli_is_the_version_ci_pins(gemini: RealCli) -> None:
    res = gemini.sb.run([gemini.binary, "--version"])
    assert res.out.strip() == GEMINI_VERSION, (
        f"gemini --version says {res.out.strip()!r}; these tests are written against {GEMINI_VERSION}, which "
        f".ci/run installs: npm install -g @google/gemini-cli@{GEMINI_VERSION}")


def test_gemini_cli_is_refused_edits_outside_the_zone_and_the_model_reads_why(gemini: RealCli) -> None:
    """`gemini -p --yolo` in the agent's worktree, trusted as `git fleet-up --trust` trusts it
    (Gemini CLI reads a workspace's .gemini/settings.json, hooks and all, only in a trusted
    folder; without a trust, -p exits 55 at once): the fleet's BeforeTool hook refuses a
    write_file and a replace outside the zone and a commit past the hooks, and lets the
    write_file inside the zone through."""
    sb = gemini.sb
    agent = _two_clis(sb).gemini
    wt = agent.worktree
    outside, inside = wt / "src/frontend/new.js", wt / "src/backend/new.py"
    session = str(uuid.uuid4())
    script: list[Any] = [
        {"name": "write_file", "args": {"file_path": "src/frontend/new.js", "content": "x()\n"}},
        {"name": "replace", "args": {"file_path": str(wt / "src/backend/../frontend/app.js"), "instruction": "rename",
                                     "old_string": "app()", "new_string": "hacked()"}},
        {"name": "run_shell_command", "args": {"command": "git commit --no-verify -qm wip", "description": "commit"}},
        {"name": "write_file", "args": {"file_path": "src/backend/new.py", "content": "ok = 1\n"}},
        "Done: one file added.",
    ]
    assert not agent_trust.gemini_trusts(wt)
    agent_trust.gemini_trust([wt])  # what `git fleet-up --trust` gives it, in ~/.gemini/trustedFolders.json
    assert agent_trust.gemini_trusts(wt)
    with GeminiModel(script) as model:
        env = {"GOOGLE_GEMINI_BASE_URL": model.url, "GEMINI_API_KEY": "test-key-for-the-scripted-model"}
        res = gemini.run(["-p", "add the files", "--yolo", "-m", "gemini-2.5-flash", "--session-id", session], wt, env)

    assert res.code == 0, str(res)
    assert "Done: one file added." in res.out
    assert model.remaining == 0 and model.overrun == 0
    written, replaced, committed, ok = model.tool_results()
    assert [r["name"] for r in (written, replaced, committed, ok)] == [
        "write_file", "replace", "run_shell_command", "write_file"]
    for refused in (written, replaced, committed):
        assert set(refused["response"]) == {"error"}, refused
        assert refused["response"]["error"].startswith("Tool execution blocked: error: "), refused
    assert "src/frontend/new.js  (owned by 'web')" in written["response"]["error"]
    assert "zone of 'backend': src/backend/**" in written["response"]["error"]
    assert "src/frontend/app.js  (owned by 'web')" in replaced["response"]["error"]
    assert "`git commit` without its hooks" in committed["response"]["error"]
    assert "error" not in ok["response"] and "src/backend/new.py" in ok["response"]["output"]
    assert not outside.exists() and (wt / "src/frontend/app.js").read_text() == "app()\n"
    assert inside.read_text() == "ok = 1\n"
    assert sb.git("log", "--format=%s", cwd=wt).out.splitlines()[0] != "wip"
    assert sb.git("status", "--porcelain", "--untracked-files=all", cwd=wt).out == "?? src/backend/new.py\n"
    # what the CLI's lifecycle hooks reported, in its session
    events = agent.events()
    assert [(e["event"], e["state"]) for e in events] == [
        ("SessionStart", "idle"), ("BeforeAgent", "working"), *[("BeforeTool", "working")] * 4,
        ("AfterTool", "working"), ("AfterAgent", "idle"), ("SessionEnd", "exited")], events
    assert {(e["cli"], e["session"]) for e in events} == {("gemini", session)}
    assert len(agent.refused()) == 3
    row = ps(sb)["backend"]
    assert (row["state"], row["session_id"], row["refused"]) == ("exited", session, 3)


# Codex's names of its hook events in `hooks.state` keys (codex-rs hooks: HookEventName, snake_case)
_CODEX_EVENT_KEYS = {"PreToolUse": "pre_tool_use", "PostToolUse": "post_tool_use",
                     "PermissionRequest": "permission_request", "SessionStart": "session_start",
                     "UserPromptSubmit": "user_prompt_submit", "Stop": "stop", "SessionEnd": "session_end"}
_CODEX_NO_MATCHER = {"UserPromptSubmit", "Stop"}  # events whose matcher Codex ignores, and leaves out of the hash


def codex_hook_trust(hooks_json: Path) -> str:
    """The config.toml tables that trust each hook of a hooks.json as Codex 0.171 records them
    when its person approves them: `[hooks.state."PATH:EVENT:GROUP:INDEX"] trusted_hash`, the
    SHA-256 of the hook's identity (event, matcher, normalized handler) as canonical JSON
    (codex-rs hooks/src/engine/discovery.rs, command_hook_hash). A hook whose hash is not there
    does not run (unless `--dangerously-bypass-hook-trust`)."""
    def canonical(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: canonical(value[k]) for k in sorted(value)}
        return [canonical(v) for v in value] if isinstance(value, list) else value

    tables = []
    for event, groups in json.loads(hooks_json.read_text())["hooks"].items():
        for g, group in enumerate(groups):
            for h, hook in enumerate(group["hooks"]):
                handler = {"type": "command", "command": hook["command"], "async": bool(hook.get("async", False)),
                           "timeout": max(int(hook.get("timeout", 600)), 1)}
                if hook.get("statusMessage") is not None:
                    handler["statusMessage"] = hook["statusMessage"]
                identity: dict[str, Any] = {"event_name": _CODEX_EVENT_KEYS[event], "hooks": [handler]}
                if group.get("matcher") is not None and event not in _CODEX_NO_MATCHER:
                    identity["matcher"] = group["matcher"]
                digest = hashlib.sha256(json.dumps(canonical(identity), separators=(",", ":"),
                                                   ensure_ascii=False).encode()).hexdigest()
                tables.append(f'[hooks.state."{hooks_json}:{_CODEX_EVENT_KEYS[event]}:{g}:{h}"]\n'
                              f'trusted_hash = "sha256:{digest}"\n')
    return "\n".join(tables)


def test_the_fleets_codex_trust_is_the_hash_codex_records(clis: TwoClis, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`git fleet-up --trust` writes for Codex exactly what this file's independent reading of
    Codex's hashing (codex_hook_trust, which real Codex accepts) writes, once, and no more."""
    monkeypatch.setenv("CODEX_HOME", str(tmp_path))
    main = clis.codex.sb.repo
    assert agent_trust.codex_untrusted(main)
    path, conflicting = agent_trust.codex_trust(main)
    assert conflicting == [] and agent_trust.codex_untrusted(main) == []
    written = tomllib.loads(path.read_text())
    assert written["hooks"] == tomllib.loads(codex_hook_trust(main / CODEX_HOOKS))["hooks"]
    assert written["projects"] == {str(main): {"trust_level": "trusted"}}
    before = path.read_text()
    assert agent_trust.codex_trust(main) == (path, []) and path.read_text() == before  # once


@pytest.fixture
def codex(fleet_repo: Sandbox, hermetic: Path, monkeypatch: pytest.MonkeyPatch) -> RealCli:
    """The installed Codex with nothing of the caller's setup (its CODEX_HOME is the test's; run_codex
    writes its config.toml)."""
    return _installed("codex", "@openai/codex", CODEX_VERSION, fleet_repo, hermetic, monkeypatch,
                      ("CODEX_", "OPENAI_", "CLAUDE"))


def run_codex(cli: RealCli, model: CodexModel, cwd: Path, trusted: list[Path]) -> Result:
    """`codex exec` in `cwd` against `model`, its CODEX_HOME the test's: the projects in
    `trusted` trusted, and every hook of their .codex/hooks.json (Codex 0.171 runs a project's
    hooks only in a trusted project, and each hook only once trusted by its hash)."""
    home = cli.home / ".codex"
    home.mkdir(exist_ok=True)
    config = ['model = "gpt-5.5"', 'model_provider = "scripted"', "check_for_update_on_startup = false", "",
              "[model_providers.scripted]", 'name = "Scripted"', f'base_url = "{model.url}/v1"', 'wire_api = "responses"',
              ""]
    (home / "config.toml").write_text("\n".join(config))
    env = {"CODEX_HOME": str(home), "OPENAI_API_KEY": "test-key-for-the-scripted-model"}
    saved = os.environ.get("CODEX_HOME")
    os.environ["CODEX_HOME"] = str(home)  # the trust `git fleet-up --trust` gives, appended to that config
    try:
        for project in trusted:
            assert agent_trust.codex_trust(project)[1] == []
            assert agent_trust.codex_untrusted(project) == []
    finally:
        os.environ.pop("CODEX_HOME") if saved is None else os.environ.update(CODEX_HOME=saved)
    return cli.run(["exec", "-s", "workspace-write", "add the files"], cwd, env)


def _codex_session(res: Result) -> str:
    found = re.search(r"^session id: (\S+)$", res.err, re.MULTILINE)
    assert found, str(res)
    return found.group(1)


def test_the_installed_codex_is_the_version_ci_pins(codex: RealCli) -> None:
    res = codex.sb.run([codex.binary, "--version"])
    assert res.out.split() == ["codex-cli", CODEX_VERSION], (
        f"codex --version says {res.out.strip()!r}; these tests are written against {CODEX_VERSION}, which .ci/run "
        f"installs: npm install -g @openai/codex@{CODEX_VERSION}")


CODEX_SCRIPT = [_patch("*** Add File: src/backend/new.py", "+x = 1"),
                _patch("*** Update File: src/frontend/app.js", "*** Move to: src/backend/app.js", "@@", "-app()",
                       "+app(2)"),
                {"name": "exec_command", "arguments": {"cmd": "git commit --no-verify -qm wip"}},
                _patch("*** Add File: src/frontend/new.js", "+ok()"),
                "Done: one file added."]


def _check_codex_run(sb: Sandbox, agent: HookedAgent, model: CodexModel, res: Result, padded: bool = False) -> None:
    """What a run of CODEX_SCRIPT (and a patch with a padded header after it, if `padded`) did."""
    wt = agent.worktree
    assert res.code == 0, str(res)
    assert "Done: one file added." in res.out
    assert model.remaining == 0 and model.overrun == 0
    added, moved, committed, ok, *rest = model.tool_results()
    for refused in (added, moved, committed):
        assert refused["output"].startswith("Command blocked by PreToolUse hook: error: "), refused
    assert "src/backend/new.py  (owned by 'backend')" in added["output"]
    assert "zone of 'web': src/frontend/**" in added["output"]
    assert "src/backend/app.js  (owned by 'backend')" in moved["output"]
    assert "`git commit` without its hooks" in committed["output"]
    assert "Success" in ok["output"] and "src/frontend/new.js" in ok["output"]
    assert not (wt / "src/backend/new.py").exists() and not (wt / "src/backend/app.js").exists()
    assert (wt / "src/frontend/app.js").read_text() == "app()\n" and (wt / "src/frontend/new.js").read_text() == "ok()\n"
    status = sb.git("status", "--porcelain", "--untracked-files=all", cwd=wt).out.splitlines()
    assert status == ["?? src/backend/padded.py"] * padded + ["?? src/frontend/new.js"]
    assert [r["output"].split("\n")[0] for r in rest] == ["Exit code: 0"] * padded
    session = _codex_session(res)
    events = agent.events()
    assert [(e["event"], e["state"]) for e in events][:2] == [("SessionStart", "idle"), ("UserPromptSubmit", "working")]
    assert [e["tool"] for e in events if e["event"] == "PreToolUse"] == [
        "apply_patch", "apply_patch", "Bash", "apply_patch"] + ["apply_patch"] * padded
    assert ("Stop", "idle") in [(e["event"], e["state"]) for e in events]
    assert {(e["cli"], e["session"]) for e in events} == {("codex", session)}
    assert len(agent.refused()) == 3
    row = ps(sb)["web"]
    assert (row["session_id"], row["refused"]) == (session, 3)


def test_codex_is_refused_edits_outside_the_zone_and_the_model_reads_why(codex: RealCli) -> None:
    """`codex exec -s workspace-write` in the agent's worktree, with the project and the hooks
    wherever git-fleet installed them trusted by hash in the test's CODEX_HOME (the trusted_hash
    method, not --dangerously-bypass-hook-trust). Codex keys a linked worktree's trust on the
    main worktree (codex-rs git-utils resolve_root_git_project_for_trust), so both are trusted."""
    sb = codex.sb
    agent = _two_clis(sb).codex
    with CodexModel(list(CODEX_SCRIPT)) as model:
        res = run_codex(codex, model, agent.worktree, [sb.repo])
    _check_codex_run(sb, agent, model, res)
    assert ".codex" not in sb.git("status", "--porcelain", "--untracked-files=all").out  # (excluded there too)



def test_doctor_names_broken_settings_and_fix_mends_only_what_is_ours(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    exclude = sb.repo / ".git/info/exclude"
    exclude.write_text(exclude.read_text() + "/.claude/settings.local.json\n")  # the person's own line, before
    api = sb.add_agent("api", "src/backend/**")
    web = sb.add_agent("web", "src/frontend/**")
    (api / ".claude/settings.local.json").write_text('{"hooks": {\n')  # broken by hand
    (web / ".claude/settings.local.json").write_text('{"theme": "dark"}\n')  # ours gone
    res = sb.fleet("doctor", "--fix", ok=None)
    assert res.code == 1 and "Traceback" not in res.err, str(res)
    assert f"{api / '.claude/settings.local.json'}:2: not valid JSON" in res.out, res.out
    assert "reinstalled the agent CLIs' hooks of 'web'" in res.out
    assert json.loads((web / ".claude/settings.local.json").read_text())["theme"] == "dark"
    assert (api / ".claude/settings.local.json").read_text() == '{"hooks": {\n'  # the person's to mend
    (api / ".claude/settings.local.json").unlink()
    assert "reinstalled the agent CLIs' hooks of 'api'" in sb.fleet("doctor", "--fix", ok=None).out
    assert "FAIL  agent hooks" not in sb.fleet("doctor", ok=None).out
    sb.fleet("init", "--uninstall")
    assert exclude.read_text().splitlines().count("/.claude/settings.local.json") == 1  # theirs stays


def test_up_names_the_trust_each_cli_lacks_and_up_trust_gives_it(fleet_repo: Sandbox, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real commands: doctor and up say which CLI would skip the fleet's hooks, and
    `git fleet-up --trust` writes each CLI's answer where its own dialog would."""
    sb = fleet_repo
    stand_ins = _stand_ins_in_tmux(tmp_path, monkeypatch)
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex-home"))
    for name in ("GEMINI_CLI_TRUSTED_FOLDERS_PATH", "GEMINI_CLI_TRUST_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)
    two = _two_clis(sb, str(stand_ins / "gemini"), str(stand_ins / "codex"))
    try:
        said = sb.fleet("doctor", ok=None).out
        assert "Gemini CLI does not trust" in said and "Codex does not trust" in said, said
        res = sb.fleet("up", "--detach", "--stagger", "0")
        assert "Gemini CLI does not trust" in res.err and "git fleet-up --trust" in res.err, res
        sb.fleet("down", "--yes")
        res = sb.fleet("up", "--detach", "--stagger", "0", "--trust")
        assert "Gemini CLI trusts 1 worktree(s)" in res.err and "Codex trusts" in res.err, res
        assert "Claude Code" not in res.err  # (no agent runs it)
        assert agent_trust.gemini_trusts(two.gemini.worktree) and agent_trust.codex_untrusted(sb.repo) == []
        said = sb.fleet("doctor", ok=None).out
        assert "does not trust" not in said, said
    finally:
        subprocess.run(["tmux", "kill-server"], capture_output=True)


def test_rm_forgets_what_the_agent_reported(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("api", "src/backend/**")
    agent_state.report(str(sb.repo / ".git"), "api", "claude", "SessionStart", "idle", "old-session")
    agent_state.refused(str(sb.repo / ".git"), "api", "edit refused")
    row = {r["agent"]: r for r in json.loads(sb.fleet("ps", "--json").out)}["api"]
    assert (row["reported"], row["session_id"], row["refused"]) == (True, "old-session", 1)
    sb.fleet("rm", "api")
    sb.add_agent("api", "src/backend/**")
    row = {r["agent"]: r for r in json.loads(sb.fleet("ps", "--json").out)}["api"]
    assert (row["reported"], row["session_id"], row["refused"]) == (False, None, 0)
