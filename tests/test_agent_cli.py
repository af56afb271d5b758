"""The real Claude Code CLI, driven offline: `claude -p` talks to a scripted stand-in of the model
(tests/model_server.py) on 127.0.0.1, so a test decides which tools the agent calls and reads what
the CLI answered. .ci/run installs the CLI, pinned to the version these tests were written against."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from git_fleet.sandbox import support as _support
from helpers import Result, Sandbox, private_tmux
from model_server import ModelServer, Say, ToolUse, Turn

ROOT = Path(__file__).resolve().parent.parent
PINNED = re.search(r"^CLAUDE_CODE_VERSION=(\S+)$", (ROOT / ".ci/run").read_text(), re.MULTILINE)
VERSION = PINNED.group(1) if PINNED else "?"
TOOLS = "Bash,Read,Edit,Write"  # as root, bypassPermissions is refused: accept edits and allow these
sandbox_support = _support()
TIMEOUT = 120  # seconds for one `claude -p` run (about 2 s here)


@dataclass
class Claude:
    """Runs the real `claude` in print mode against a ModelServer, as an agent of the fleet would
    run: in a worktree, with the test's private HOME and TMPDIR, in a process group of its own."""
    binary: str
    sandbox: Sandbox
    tmp: Path
    seconds: list[float] = field(default_factory=list)

    def run(self, server: ModelServer, prompt: str, cwd: Path, *extra: str, timeout: float = TIMEOUT) -> Result:
        args = [self.binary, "-p", prompt, "--permission-mode", "acceptEdits", "--allowedTools", TOOLS, *extra]
        start = time.monotonic()
        res = self.sandbox.run_group(args, cwd, server.env(), timeout,
                                     said=lambda: f"--- requests\n{[r.path for r in server.requests]}")
        self.seconds.append(time.monotonic() - start)
        return res


@pytest.fixture
def claude(sandbox: Sandbox, hermetic: Path, monkeypatch: pytest.MonkeyPatch) -> Claude:
    """The installed Claude Code CLI, with nothing of the caller's own Claude setup in its way:
    HOME is the test's (hermetic), temporary files go under the test's directory."""
    binary = shutil.which("claude")
    if binary is None:
        pytest.skip(f"the Claude Code CLI is not installed: .ci/run installs it "
                    f"(npm install -g @anthropic-ai/claude-code@{VERSION})")
    for var in list(os.environ):
        if var.startswith(("ANTHROPIC_", "CLAUDE")) or var in ("AI_AGENT", "TMPPREFIX"):
            monkeypatch.delenv(var)  # e.g. CLAUDECODE=1 when the suite runs inside a Claude Code session
    tmp = sandbox.root / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # the CLI's own /tmp/claude-UID/... goes here instead
    monkeypatch.setenv("TMPPREFIX", str(tmp / "zsh"))  # and the here-documents of the zsh it runs commands in
    monkeypatch.setenv("DISABLE_AUTOUPDATER", "1")
    return Claude(binary, sandbox, tmp)


def test_the_installed_claude_cli_is_the_version_ci_pins(claude: Claude) -> None:
    res = claude.sandbox.run([claude.binary, "--version"], cwd=claude.tmp)
    assert res.out.split()[0] == VERSION, (
        f"claude --version says {res.out.strip()!r}; these tests are written against {VERSION}, which .ci/run "
        f"installs: npm install -g @anthropic-ai/claude-code@{VERSION}")


def test_claude_print_mode_writes_a_file_through_a_scripted_tool_call(fleet_repo: Sandbox, claude: Claude) -> None:
    sb = fleet_repo
    target = sb.repo / "src/backend/new.py"
    status = ["git", "status", "--porcelain", "--untracked-files=all", "--ignored"]
    before = set(sb.run(status).out.splitlines())
    script: list[Turn] = [ToolUse("Write", {"file_path": str(target), "content": "def new():\n    return 1\n"},
                                  text="I'll add the new module."),
                          Say("Added src/backend/new.py.")]
    with ModelServer(script) as server:
        res = claude.run(server, "Add src/backend/new.py", sb.repo)

    assert res.code == 0, str(res)
    assert target.read_text() == "def new():\n    return 1\n"
    assert "Added src/backend/new.py." in res.out
    [written] = server.tool_results()
    assert (written.turn, written.is_error) == (0, False), written
    assert "src/backend/new.py" in written.text
    assert server.remaining == 0 and server.overrun == 0
    assert [r.turn for r in server.turns] == [0, 1]
    assert set(sb.run(status).out.splitlines()) == before | {"?? src/backend/new.py"}  # and nothing else
    home = Path(os.environ["HOME"])
    assert (home / ".claude.json").is_file(), "the CLI keeps its state in the test's HOME"


def test_a_pre_tool_use_hook_that_exits_2_refuses_the_write_and_the_model_reads_why(
        fleet_repo: Sandbox, claude: Claude) -> None:
    sb = fleet_repo
    worktree = sb.add_agent("backend", "src/backend/**")
    payload = sb.root / "hook-payload.json"
    reason = "zone: src/backend/new.py may not be written here (test hook)"
    settings = worktree / ".claude/settings.local.json"
    settings.parent.mkdir(exist_ok=True)
    config = json.loads(settings.read_text()) if settings.exists() else {}
    config.setdefault("hooks", {}).setdefault("PreToolUse", []).append({
        "matcher": "Write|Edit",
        "hooks": [{"type": "command",
                   "command": f"cat > {shlex.quote(str(payload))}; echo {shlex.quote(reason)} >&2; exit 2"}],
    })
    settings.write_text(json.dumps(config, indent=2) + "\n")
    target = worktree / "src/backend/new.py"
    script: list[Turn] = [ToolUse("Write", {"file_path": str(target), "content": "x = 1\n"}),
                          Say("The hook refused the write.")]
    with ModelServer(script) as server:
        res = claude.run(server, "Add src/backend/new.py", worktree)

    assert res.code == 0, str(res)
    assert not target.exists()
    assert "The hook refused the write." in res.out
    [refused] = server.tool_results()
    assert refused.turn == 0 and refused.is_error, refused
    assert reason in refused.text
    assert [r.turn for r in server.turns] == [0, 1]  # the refusal went back in the very next request
    assert server.turns[1].last_user_blocks()[0]["type"] == "tool_result"
    # what the hook was given on stdin: the tool call, where it runs
    event = json.loads(payload.read_text())
    assert event["hook_event_name"] == "PreToolUse" and event["tool_name"] == "Write"
    assert event["tool_input"]["file_path"] == str(target)
    assert event["tool_use_id"] == refused.tool_use_id
    assert Path(event["cwd"]) == worktree and event["session_id"]


def test_the_model_server_answers_side_requests_without_using_its_script() -> None:
    """What the CLI does not send today but may (a title, a quota probe, a token count, a probe of
    the base URL) gets a minimal answer, and only the agent's turns use up the script."""
    def call(server: ModelServer, path: str, body: object = None, method: str = "POST") -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(server.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    agent = {"model": "m", "max_tokens": 10, "tools": [{"name": "Write"}],
             "messages": [{"role": "user", "content": "go"}]}
    with ModelServer([ToolUse("Read", {"file_path": "/x"}), Say("done")]) as server:
        assert call(server, "/", method="HEAD")[0] == 200
        status, body = call(server, "/v1/messages", {"model": "haiku", "max_tokens": 1,
                                                     "messages": [{"role": "user", "content": "quota"}]})
        assert status == 200 and json.loads(body)["content"] == [{"type": "text", "text": ModelServer.SIDE_TEXT}]
        assert json.loads(call(server, "/v1/messages/count_tokens", agent)[1])["input_tokens"] > 0
        assert call(server, "/v1/models", method="GET")[0] == 404
        status, body = call(server, "/v1/messages?beta=true", agent)  # not streamed: one JSON message
        message = json.loads(body)
        assert message["stop_reason"] == "tool_use"
        assert message["content"][0] == {"type": "tool_use", "id": message["content"][0]["id"], "name": "Read",
                                          "input": {"file_path": "/x"}}
        tool_use_id = message["content"][0]["id"]
        answer = {**agent, "stream": True, "messages": [
            {"role": "user", "content": "go"}, {"role": "assistant", "content": message["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use_id, "is_error": True,
                                          "content": [{"type": "text", "text": "no such file"}]}]}]}
        status, stream = call(server, "/v1/messages", answer)
        events = [line.split(": ", 1)[1] for line in stream.decode().splitlines() if line.startswith("event: ")]
        assert events == ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                          "message_delta", "message_stop"]
        assert b'"text": "done"' in stream and b'"stop_reason": "end_turn"' in stream
        assert json.loads(call(server, "/v1/messages", agent)[1])["content"][0]["text"] == ModelServer.EXHAUSTED_TEXT
    assert server.remaining == 0 and server.overrun == 1
    assert [r.turn for r in server.requests] == [None, None, None, None, 0, 1, None]
    assert [(r.turn, r.is_error, r.text) for r in server.tool_results()] == [(0, True, "no such file")]


def _read_then(tool: str, target: Path, **input: str) -> list[Turn]:
    """A Read of the file first (Claude Code refuses a Write or Edit of an existing file it has
    not read in the session), then the tool call."""
    return [ToolUse("Read", {"file_path": str(target)}), ToolUse(tool, {"file_path": str(target), **input})]


def test_the_fleets_hook_refuses_edits_outside_the_zone_before_they_happen(fleet_repo: Sandbox, claude: Claude) -> None:
    sb = fleet_repo
    backend = sb.add_agent("backend", "src/backend/**")
    web = sb.add_agent("web", "src/frontend/**")
    app = backend / "src/frontend/app.js"
    before = {p: p.read_text() for p in (app, web / "src/frontend/app.js", sb.repo / ".gitfleet.toml")}
    script: list[Turn] = [
        *_read_then("Edit", app, old_string="app()", new_string="hacked()"),              # another agent's path
        ToolUse("Write", {"file_path": str(backend / "src/backend/../frontend/new.js"), "content": "x\n"}),  # through ..
        *_read_then("Write", web / "src/frontend/app.js", content="x\n"),  # another agent's worktree
        *_read_then("Write", sb.repo / ".gitfleet.toml", content="x\n"),  # the fleet's configuration
        ToolUse("Write", {"file_path": str(backend / ".claude/settings.json"), "content": "{}\n"}),
        ToolUse("Write", {"file_path": str(backend / "src/backend/new.py"), "content": "ok = 1\n"}),  # in its zone
        Say("done"),
    ]
    with ModelServer(script) as server:
        res = claude.run(server, "go", backend)
    assert res.code == 0, str(res)
    results = server.tool_results()
    assert [r.is_error for r in results] == [False, True, True, False, True, False, True, True, False], results
    for r in results:
        print(r.text)
    assert "owned by 'web'" in results[1].text and "zone of 'backend': src/backend/**" in results[1].text
    assert "frontend/new.js" in results[2].text
    assert "the worktree of agent 'web'" in results[4].text
    assert "main worktree" in results[6].text
    assert "agent CLI's settings" in results[7].text
    assert {p: p.read_text() for p in before} == before
    assert not (backend / "src/frontend/new.js").exists() and not (backend / ".claude/settings.json").exists()
    assert (backend / "src/backend/new.py").read_text() == "ok = 1\n"
    assert sb.run(["git", "status", "--porcelain"], cwd=backend).out == "?? src/backend/new.py\n"


def test_a_commit_past_the_hooks_is_refused_an_honest_one_lands_and_ps_tells_what_happened(
        fleet_repo: Sandbox, claude: Claude) -> None:
    sb = fleet_repo
    backend = sb.add_agent("backend", "src/backend/**")
    assert sb.git("status", "--porcelain", "--untracked-files=all", cwd=backend).out == ""  # the settings are ignored
    script: list[Turn] = [
        ToolUse("Write", {"file_path": str(backend / "src/backend/new.py"), "content": "ok = 1\n"}),
        ToolUse("Bash", {"command": "git add -A && git commit --no-verify -qm sneaky", "description": "commit"}),
        ToolUse("Bash", {"command": "git add -f .claude/settings.local.json src/backend/new.py && git commit -qm all",
                         "description": "commit"}),
        ToolUse("Bash", {"command": "git reset -q && git add src/backend/new.py && git commit -qm honest",
                         "description": "commit"}),
        Say("Committed."),
    ]
    with ModelServer(script) as server:
        res = claude.run(server, "Add src/backend/new.py and commit it", backend)
    assert res.code == 0, str(res)
    results = server.tool_results()
    assert [r.is_error for r in results] == [False, True, True, False], results
    assert "--no-verify" in results[1].text and "zone check" in results[1].text
    # the commit hook, not the edit gate, refuses the settings: `git add -f` is a shell command
    assert "commit rejected" in results[2].text and ".claude/settings.local.json" in results[2].text
    assert sb.git("log", "--format=%s", "fleet/backend", "-1").out.strip() == "honest"
    assert sb.git("show", "--name-only", "--format=", "fleet/backend").out.split() == ["src/backend/new.py"]
    assert sb.git("status", "--porcelain", "--untracked-files=all", cwd=backend).out == ""

    # what the fleet knows of it: the session the CLI used, how it ended, one refusal at the edit
    session = server.turns[0].headers.get("X-Claude-Code-Session-Id") or server.turns[0].headers.get(
        "x-claude-code-session-id")
    [row] = json.loads(sb.fleet("ps", "--json").out)
    assert row["session_id"] == session and row["reported"], row
    assert row["state"] == "exited" and row["refused"] == 1, row
    events = [json.loads(line) for line in
              (sb.repo / ".git/fleet/agents/backend/events").read_text().splitlines()]
    seen = [(e["event"], e["state"]) for e in events]
    assert seen[0] == ("SessionStart", "idle") and seen[-2:] == [("Stop", "idle"), ("SessionEnd", "exited")], seen
    assert ("PreToolUse", "working") in seen and {e.get("tool") for e in events} >= {"Write", "Bash"}


def test_a_new_session_is_told_its_brief(fleet_repo: Sandbox, claude: Claude) -> None:
    sb = fleet_repo
    backend = sb.add_agent("backend", "src/backend/**")
    sb.fleet("task", "add", "Write the API", "--agent", "backend")
    with ModelServer([Say("Read it.")]) as server:
        res = claude.run(server, "What is your zone?", backend)
    assert res.code == 0, str(res)
    sent = json.dumps(server.turns[0].body)
    assert "You are agent 'backend' of a git-fleet fleet" in sent
    assert "src/backend/**" in sent and "Added for you, to claim: task-001 Write the API" in sent


def _pane_text(tmux: str, target: str) -> str:
    return subprocess.run([tmux, "capture-pane", "-p", "-t", target], capture_output=True, text=True).stdout


def _until(check: Callable[[], object], what: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"waited {timeout} s for {what}")


def test_up_runs_claude_interactively_gated_trusted_once_and_resumes_the_exact_session(
        fleet_repo: Sandbox, claude: Claude, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole practice in a real terminal: `git fleet-up --trust` starts Claude Code in tmux,
    without a trust dialog (hooks run only in a trusted workspace), the agent's out-of-zone
    Write is refused there, ps says it needs its person at a permission prompt and then that it
    is idle, and after `down` the next `up` resumes exactly that session."""
    private_tmux(tmp_path, monkeypatch)
    tmux = shutil.which("tmux") or "tmux"
    sb = fleet_repo
    home = Path(os.environ["HOME"])
    key = "sk-ant-test-model-server"
    (home / ".claude.json").write_text(json.dumps({  # a person who has used Claude Code, not in this repository
        "hasCompletedOnboarding": True, "customApiKeyResponses": {"approved": [key[-20:]], "rejected": []}}))
    backend = sb.add_agent("backend", "src/backend/**")
    outside, inside = backend / "src/frontend/x.js", backend / "src/backend/x.py"
    script: list[Turn] = [ToolUse("Write", {"file_path": str(outside), "content": "x\n"}),
                          ToolUse("Write", {"file_path": str(inside), "content": "x = 1\n"}),
                          Say("One refused, one written.")]
    try:
        with ModelServer(script) as server:
            for name, value in {**server.env(), "DISABLE_AUTOUPDATER": "1"}.items():
                monkeypatch.setenv(name, value)
            assert "does not trust" in sb.fleet("doctor", ok=None).out + sb.fleet("doctor", ok=None).err
            sb.fleet("up", "--detach", "--trust", "--stagger", "0")
            target = json.loads(sb.fleet("ps", "--json").out)[0]["pane"]
            _until(lambda: "for shortcuts" in _pane_text(tmux, target) or "? for" in _pane_text(tmux, target),
                   "Claude Code's prompt (a trust dialog would stop it here)")
            subprocess.run([tmux, "send-keys", "-t", target, "Write the two files", "Enter"], check=True)

            def ps() -> dict[str, Any]:
                return dict(json.loads(sb.fleet("ps", "--json").out)[0])

            row = _until(lambda: (r := ps())["state"] == "needs you" and r, "the permission prompt for x.py")
            assert "Write" in str(row), row  # which tool asks
            print(sb.fleet("ps").out)  # (the README shows it)
            assert not outside.exists() and not inside.exists()
            subprocess.run([tmux, "send-keys", "-t", target, "Enter"], check=True)  # yes, once
            _until(lambda: ps()["state"] == "idle", "the end of the agent's turn")
            assert inside.read_text() == "x = 1\n" and not outside.exists()
            results = server.tool_results()
            assert results[0].is_error and "owned by no agent" in results[0].text, results[0]
            row = ps()
            started = json.loads((sb.repo / ".git/fleet/sessions.json").read_text())["backend"]["session_id"]
            assert row["session_id"] == started and row["refused"] == 1, row
            print(sb.fleet("ps").out)

            sb.fleet("down", "--yes")
            sb.fleet("up", "--detach", "--stagger", "0")
            target = json.loads(sb.fleet("ps", "--json").out)[0]["pane"]
            command = subprocess.run([tmux, "display", "-p", "-t", target, "#{pane_start_command}"],
                                     capture_output=True, text=True).stdout
            assert f"claude --resume {started}" in command, command
            _until(lambda: "One refused, one written." in _pane_text(tmux, target), "the resumed conversation")
    finally:
        subprocess.run([tmux, "kill-server"], capture_output=True)


@pytest.mark.skipif(sandbox_support.missing() is not None, reason=f"no sandbox here: {sandbox_support.missing()}")
def test_claude_runs_sandboxed_its_hooks_still_speak_and_its_commit_lands(fleet_repo: Sandbox, claude: Claude,
                                                                          hermetic: Path) -> None:
    sb = fleet_repo
    backend = sb.add_agent("backend", "src/backend/**")
    sb.run(["git", "fleet-set", "backend", "--sandbox", "on"])
    settings = hermetic / ".claude" / "settings.json"
    settings.parent.mkdir(exist_ok=True)
    settings.write_text('{"theme": "dark"}\n')
    script: list[Turn] = [
        ToolUse("Write", {"file_path": str(backend / "src/backend/new.py"), "content": "ok = 1\n"}),
        ToolUse("Write", {"file_path": str(backend / "src/frontend/x.js"), "content": "x\n"}),  # the zone's gate
        # (the path built at run time, past the shell guard: the sandbox refuses it)
        ToolUse("Bash", {"command": "python3 -c \"import os; open(os.path.expanduser('~') + '/.cla' + "
                                    "'ude/settings.json', 'w').write('{}')\"", "description": "x"}),
        ToolUse("Bash", {"command": "git add src/backend/new.py && git commit -qm 'backend: new'", "description": "c"}),
        Say("Committed."),
    ]
    with ModelServer(script) as server:
        port = server.url.rsplit(":", 1)[1]
        cfg = sb.repo / ".gitfleet.toml"
        cfg.write_text(cfg.read_text().replace("[fleet]\n", f"[fleet]\nsandbox_ports = [{port}]\n", 1))
        res = sb.run_group(["git", "fleet-run", "backend", "--", claude.binary, "-p", "go", "--permission-mode",
                            "acceptEdits", "--allowedTools", TOOLS], sb.repo, server.env(), TIMEOUT)
    assert res.code == 0 and "Committed." in res.out, str(res)
    results = server.tool_results()
    assert [r.is_error for r in results] == [False, True, True, False], results
    assert "zone of 'backend'" in results[1].text
    assert "Read-only file system" in results[2].text or "Permission denied" in results[2].text, results[2]
    assert settings.read_text() == '{"theme": "dark"}\n'
    status = json.loads(sb.run(["git", "fleet-status", "--json"]).out)
    assert next(a for a in status["agents"] if a["agent"] == "backend")["ahead"] == 1
    assert sb.git("log", "-1", "--format=%s", "fleet/backend/work").out.strip() == "backend: new"
    row = next(r for r in json.loads(sb.run(["git", "fleet-ps", "--json"]).out) if r["agent"] == "backend")
    assert row["reported"] and row["refused"] == 1  # (its hooks wrote its own state, from inside)
