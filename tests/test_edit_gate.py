"""The edit gate, the shell guard and the agents' state, called in-process on a real fleet (the
same code the agent CLIs' hooks run as `python -I -S`, where coverage cannot follow them; the
real CLIs drive them in test_agent_cli.py and test_other_agent_clis.py)."""

from __future__ import annotations

import io
import json
import sys
import threading
from pathlib import Path

import pytest

from git_fleet import agent_hook, agent_state, fastjson, shell_guard
from git_fleet.edit_gate import Place
from helpers import Sandbox

PROTECTED = [".gitfleet.toml", ".claude", ".gemini", ".codex", "/r/.git/hooks", "/r/.git/config", ".git/hooks"]


@pytest.mark.parametrize("command", [
    "git commit --no-verify -m x", "git commit -nm x", "git commit -anm x", "git -C ../x commit -n -m y",
    "FOO=1 git commit -q -n", "git status && git commit -n", "git push --no-verify", "git merge --no-verify x",
    "git -c core.hooksPath=/dev/null commit -m x", "git config core.hooksPath /tmp/h", "git config include.path ~/x",
    "echo x > .gitfleet.toml", "sed -i s/a/b/ .gitfleet.toml", "python3 -c \"open('.claude/settings.json','w')\"",
    "echo '{\"disableAllHooks\": true}' > .claude/settings.json", "rm -rf .git/hooks", "cp x /r/.git/hooks/pre-commit",
    "echo hi >> .codex/hooks.json", "tee .gemini/settings.json < x",
])
def test_the_shell_guard_refuses_commands_that_skip_or_switch_off_the_gates(command: str) -> None:
    refusal = shell_guard.judge(command, PROTECTED)
    assert refusal is not None and refusal.message.startswith("command refused: ") and refusal.hint, command


@pytest.mark.parametrize("command", [
    "git commit -m 'fix n things'", "git commit -m -n", "git commit -mn", "git commit -am x", "git log -n 3",
    "cat .gitfleet.toml", "cat .gitfleet.toml > /tmp/x", "ls .claude", "git config user.name x", "npm test",
    "git commit -m \"unclosed", "grep -n no-verify-ish README.md",
])
def test_the_shell_guard_lets_ordinary_commands_through(command: str) -> None:
    assert shell_guard.judge(command, PROTECTED) is None, command


def test_fastjson_reads_and_writes_as_json_does() -> None:
    text = '{"a": [1, 2.5, "x\\u00e9", null, true, {"b": "c"}], "n": -3e2}'
    assert fastjson.loads(text) == json.loads(text) and fastjson.loads(text.encode()) == json.loads(text)
    for bad in ["", "[1,", '{"a": 1} x', "{'a': 1}"]:
        with pytest.raises(ValueError):
            fastjson.loads(bad)
    fields = {"t": 1.5, "s": "é\n\"", "n": None, "b": True, "f": False, "i": 3}
    assert fastjson.dumps_flat(fields) == json.dumps(fields)


@pytest.fixture
def two_agents(fleet_repo: Sandbox) -> tuple[Sandbox, Path, Path]:
    sb = fleet_repo
    return sb, sb.add_agent("backend", "src/backend/**"), sb.add_agent("web", "src/frontend/**")


def test_a_path_is_judged_where_it_lands(two_agents: tuple[Sandbox, Path, Path]) -> None:
    sb, backend, web = two_agents
    place = Place.find(str(backend / "src"))
    assert place is not None and place.agent.name == "backend"
    assert Place.find(str(sb.repo)) is None and Place.find(str(sb.root)) is None  # the orchestrator's; no repository
    cwd = str(backend)
    assert place.judge("src/backend/a.py", cwd) is None
    assert place.judge(str(backend / "src/backend/new/b.py"), cwd) is None
    assert place.judge(str(sb.root / "scratch.txt"), cwd) is None  # outside the repository: temporary files
    refused = {
        "src/frontend/app.js": "owned by 'web'",
        "src/backend/../frontend/x.js": "owned by 'web'",
        ".gitfleet.toml": "the fleet's own configuration",
        ".claude/settings.local.json": "agent CLI's settings",
        str(web / "src/frontend/app.js"): "agent 'web''s worktree",
        str(sb.repo / "src/backend/api.py"): "the main worktree",
        str(sb.repo / ".git/hooks/pre-commit"): "git directory",
        "~/.claude/settings.json": "settings, which can switch",
        ".": "the top of your worktree",
    }
    for path, why in refused.items():
        refusal = place.judge(path, cwd)
        assert refusal is not None and why in refusal.message, (path, refusal and refusal.message)
    (backend / "src/backend/link").symlink_to(web / "src/frontend")
    refusal = place.judge("src/backend/link/app.js", cwd)
    assert refusal is not None and "agent 'web''s worktree" in refusal.message


def _hook(cli: str, role: str, payload: object, monkeypatch: pytest.MonkeyPatch,
          capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw.encode())))
    code = agent_hook.main([cli, role])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_hook_gates_reports_and_fails_closed(two_agents: tuple[Sandbox, Path, Path],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    sb, backend, _web = two_agents
    monkeypatch.delenv("CLAUDE_PROJECT_DIR", raising=False)
    common = str(sb.repo / ".git")
    base = {"session_id": "s-1", "cwd": str(backend)}
    write = {**base, "hook_event_name": "PreToolUse", "tool_name": "Write",
             "tool_input": {"file_path": "src/frontend/app.js", "content": "x"}}
    code, _, err = _hook("claude", "gate", write, monkeypatch, capsys)
    assert code == 2 and "error: edit refused" in err and "owned by 'web'" in err
    assert _hook("claude", "gate", {**write, "tool_input": {"file_path": "src/backend/x.py"}},
                 monkeypatch, capsys)[0] == 0
    assert _hook("claude", "gate", {**write, "tool_input": {}}, monkeypatch, capsys)[:1] == (2,)
    bash = {**base, "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "git commit -n"}}
    assert _hook("claude", "gate", bash, monkeypatch, capsys)[0] == 2
    patch = {**base, "hook_event_name": "PreToolUse", "tool_name": "apply_patch",
             "tool_input": {"command": "*** Begin Patch\n*** Update File: src/backend/api.py\n*** Move to: docs/x.md\n"}}
    code, _, err = _hook("codex", "gate", patch, monkeypatch, capsys)
    assert code == 2 and "docs/x.md" in err
    # malformed input: refused with a line that says so, never a traceback
    for bad in ["not json", "[1, 2]"]:
        code, _, err = _hook("claude", "gate", bad, monkeypatch, capsys)
        assert code == 2 and err.startswith("error: the agent CLI's hook input is not") and "Traceback" not in err
    assert _hook("claude", "event", "not json", monkeypatch, capsys)[0] == 0  # a report dropped, the agent goes on
    assert _hook("nosuch", "gate", {}, monkeypatch, capsys)[0] == 2
    # a bug fails closed
    monkeypatch.setattr(Place, "judge", lambda *_a, **_k: 1 / 0)
    code, _, err = _hook("claude", "gate", write, monkeypatch, capsys)
    assert code == 2 and "ZeroDivisionError" in err and "refused" in err
    monkeypatch.undo()

    # the state reported: a permission prompt needs the person, then the turn ends
    code, out, _ = _hook("claude", "event", {**base, "hook_event_name": "SessionStart", "source": "startup"},
                         monkeypatch, capsys)
    assert code == 0 and "Brief for agent backend" in json.loads(out)["hookSpecificOutput"]["additionalContext"]
    assert _hook("claude", "event", {**base, "hook_event_name": "PostToolUse"}, monkeypatch, capsys)[1] == ""
    _hook("claude", "event", {**base, "hook_event_name": "Notification", "notification_type": "permission_prompt",
                              "message": "Claude needs your permission to use Bash"}, monkeypatch, capsys)
    state = agent_state.read(common, "backend")
    assert state is not None and state["state"] == "needs you" and "permission" in str(state["message"])
    assert state["session"] == "s-1" and state["refused"] == 4  # (the crash refused too, before it could count)
    _hook("claude", "event", {**base, "hook_event_name": "Stop"}, monkeypatch, capsys)
    assert (agent_state.read(common, "backend") or {})["state"] == "idle"
    # a new task for it: told at its next tool call
    sb.fleet("task", "add", "Refunds", "--agent", "backend")
    code, out, _ = _hook("claude", "event", {**base, "hook_event_name": "PostToolUse"}, monkeypatch, capsys)
    assert "The fleet changed your brief" in out and "task-001 Refunds" in out


def test_ten_agents_reporting_at_once_lose_no_event(tmp_path: Path) -> None:
    common = str(tmp_path / "common")
    threads = [threading.Thread(target=lambda n=n: [agent_state.report(common, f"a{n % 10}", "claude", "PreToolUse",
                                                                        "working", "s", tool="Write")
                                                     for _ in range(100)]) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(10):
        lines = Path(agent_state.directory(common, f"a{n}"), "events").read_text().splitlines()
        assert len(lines) == 200 and all(json.loads(line)["tool"] == "Write" for line in lines)
    blocked = tmp_path / "blocked"
    (blocked / "fleet").mkdir(parents=True)
    (blocked / "fleet/agents").write_text("")  # where its directory should be (root writes through modes)
    agent_state.report(str(blocked), "new", "claude", "Stop", "idle")  # dropped, quietly
    assert agent_state.read(str(blocked), "new") is None
