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
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import Result, Sandbox
from model_server import ModelServer, Say, ToolUse, Turn

ROOT = Path(__file__).resolve().parent.parent
PINNED = re.search(r"^CLAUDE_CODE_VERSION=(\S+)$", (ROOT / ".ci/run").read_text(), re.MULTILINE)
VERSION = PINNED.group(1) if PINNED else "?"
TOOLS = "Bash,Read,Edit,Write"  # as root, bypassPermissions is refused: accept edits and allow these
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
        proc = self.sandbox.spawn(args, cwd=cwd, env=server.env(), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            Sandbox.kill_group(proc)
            out, err = proc.communicate()
            pytest.fail(f"claude -p did not end within {timeout} s\n--- stdout\n{out}\n--- stderr\n{err}\n"
                        f"--- requests\n{[r.path for r in server.requests]}")
        finally:
            Sandbox.kill_group(proc)  # and whatever it started that stayed in its group (shells, hooks)
        self.seconds.append(time.monotonic() - start)
        return Result(proc.returncode, out, err)


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
