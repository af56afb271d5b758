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

PROTECTED = [".gitfleet.toml", ".claude", ".gemini", ".codex", "/r/.git/hooks", "/r/.git/config", ".git"]


@pytest.mark.parametrize("command", [
    "git commit --no-verify -m x", "git commit -nm x", "git commit -anm x", "git -C ../x commit -n -m y",
    "FOO=1 git commit -q -n", "git status && git commit -n", "git push --no-verify", "git merge --no-verify x",
    "git -c core.hooksPath=/dev/null commit -m x", "git config core.hooksPath /tmp/h", "git config include.path ~/x",
    "echo x > .gitfleet.toml", "sed -i s/a/b/ .gitfleet.toml", "python3 -c \"open('.claude/settings.json','w')\"",
    "echo '{\"disableAllHooks\": true}' > .claude/settings.json", "rm -rf .git/hooks", "cp x /r/.git/hooks/pre-commit",
    "echo hi >> .codex/hooks.json", "tee .gemini/settings.json < x",
    "git commit --no-veri -m x", "git push --no-v", "bash -c 'git commit --no-verify -m x'",
    "sh -lc \"echo x > .gitfleet.toml\"", "eval git commit -n", "mv .git .git.off",
])
def test_the_shell_guard_refuses_commands_that_skip_or_switch_off_the_gates(command: str) -> None:
    refusal = shell_guard.judge(command, PROTECTED)
    assert refusal is not None and refusal.message.startswith("command refused: ") and refusal.hint, command


@pytest.mark.parametrize("command", [
    "git commit -m 'fix n things'", "git commit -m -n", "git commit -mn", "git commit -am x", "git log -n 3",
    "cat .gitfleet.toml", "cat .gitfleet.toml > /tmp/x", "ls .claude", "git config user.name x", "npm test",
    "git commit -m \"unclosed", "grep -n no-verify-ish README.md", "grep -rn core.hooksPath docs",
    "git config --get core.hooksPath", "git commit --no-verbose -m x", "cat .git/HEAD", "rm .gitignore",
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
        str(web / "src/frontend/app.js"): "the worktree of agent 'web'",
        str(sb.repo / "src/backend/api.py"): "the main worktree",
        str(sb.repo / ".git/hooks/pre-commit"): "git directory",
        str(Path.home() / ".claude/settings.json"): "settings, which can switch",
        "~/.claude/settings.json": "outside its zone",  # (as Gemini CLI and Codex read it: a directory named ~)
        ".": "the top of your worktree",
    }
    for path, why in refused.items():
        refusal = place.judge(path, cwd)
        assert refusal is not None and why in refusal.message, (path, refusal and refusal.message)
    (backend / "src/backend/link").symlink_to(web / "src/frontend")
    refusal = place.judge("src/backend/link/app.js", cwd)
    assert refusal is not None and "the worktree of agent 'web'" in refusal.message


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
    with monkeypatch.context() as patched:
        patched.setattr(Place, "judge", lambda *_a, **_k: 1 / 0)
        code, _, err = _hook("claude", "gate", write, monkeypatch, capsys)
    assert code == 2 and "ZeroDivisionError" in err and "refused" in err

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


def test_a_long_event_log_is_set_aside_and_the_state_read_from_its_end(tmp_path: Path) -> None:
    common = str(tmp_path)
    for i in range(9000):  # ~1.1 MB
        agent_state.report(common, "api", "claude", "PreToolUse", "working", "s", tool=f"Tool{i}")
    agent_state.report(common, "api", "claude", "Stop", "idle", "s")
    state = agent_state.read(common, "api")
    assert state is not None and state["state"] == "idle" and state["session"] == "s"
    log = Path(agent_state.directory(common, "api"), "events")
    assert log.stat().st_size > agent_state.ROTATE
    agent_state.rotate(common, "api")
    assert not log.exists() and Path(f"{log}.1").is_file() and agent_state.read(common, "api") is None
    agent_state.rotate(common, "api")  # nothing to set aside


def _installed_gate(worktree: Path) -> str:
    """The PreToolUse command git-fleet installed in the worktree's Claude Code settings."""
    settings = json.loads((worktree / ".claude/settings.local.json").read_text())
    [group] = settings["hooks"]["PreToolUse"]
    return str(group["hooks"][0]["command"])


def _run_gate(sb: Sandbox, worktree: Path, tool: str, **tool_input: object) -> tuple[int, str]:
    payload = {"hook_event_name": "PreToolUse", "session_id": "s", "cwd": str(worktree), "tool_name": tool,
               "tool_input": tool_input}
    res = sb.run(["sh", "-c", _installed_gate(worktree)], cwd=worktree, input=json.dumps(payload), ok=None)
    return res.code, res.err


def test_the_gate_holds_when_the_worktree_or_the_fleet_cannot_be_seen(two_agents: tuple[Sandbox, Path, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Hostile moves that would make the gate take the worktree for no fleet's, through the
    command git-fleet installed: it names the fleet it is for, and programs by absolute path."""
    sb, backend, _web = two_agents
    monkeypatch.delenv("CLAUDE_PROJECT_DIR", raising=False)
    command = _installed_gate(backend)
    assert not command.startswith("timeout ") and "/timeout -k 1 10 " in command  # (PATH is the agent's)
    config = sb.repo / ".gitfleet.toml"
    (backend / ".git").rename(backend / ".git.off")  # the worktree's .git moved away
    for path in (str(config), "src/frontend/x.js"):
        code, err = _run_gate(sb, backend, "Write", file_path=path, content="x")
        assert code == 2 and "edit refused" in err, (path, err)
    assert _run_gate(sb, backend, "Write", file_path="src/backend/x.py", content="x")[0] == 0
    (backend / ".git.off").rename(backend / ".git")
    config.rename(sb.root / "aside.toml")  # the fleet's configuration gone from the main worktree
    code, err = _run_gate(sb, backend, "Write", file_path="src/frontend/x.js", content="x")
    assert code == 2 and "configuration is gone" in err, err
    (sb.root / "aside.toml").rename(config)
    package = Path(agent_hook.__file__).parent
    for tool, field, path in [("Write", "file_path", str(package / "edit_gate.py")),
                              ("mcp__fs__write_file", "path", "src/frontend/x.js")]:
        code, err = _run_gate(sb, backend, tool, **{field: path, "content": "x"})
        assert code == 2 and "edit refused" in err, (tool, err)
    assert _run_gate(sb, backend, "mcp__fs__read_file", path="src/frontend/app.js")[0] == 0  # reads are no edits
    hooks = sb.repo / ".git/hooks"
    payload = {"hook_event_name": "PreToolUse", "session_id": "s", "cwd": str(backend), "tool_name": "exec_command",
               "tool_input": {"cmd": "echo x > pre-commit", "workdir": str(hooks)}}
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(payload).encode())))
    assert agent_hook.main(["codex", "gate", str(sb.repo / ".git"), str(sb.repo)]) == 2


def test_trust_is_written_through_links_and_never_breaks_a_persons_file(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    from git_fleet import agent_settings, agent_trust

    home = tmp_path / "home"
    dotfiles = tmp_path / "dotfiles"
    (home / ".codex").mkdir(parents=True)
    dotfiles.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CODEX_HOME", raising=False)
    monkeypatch.delenv("GEMINI_CLI_TRUSTED_FOLDERS_PATH", raising=False)
    monkeypatch.delenv("GEMINI_CLI_TRUST_WORKSPACE", raising=False)
    main = tmp_path / 'we"ird main'
    main.mkdir()
    agent_settings.install(main, agent_settings.CODEX, (str(main / ".git"), str(main)))
    # a config kept in dotfiles, linked from ~/.codex: written through the link, quoted right, once
    (dotfiles / "config.toml").write_text('model = "o3"\n')
    (home / ".codex/config.toml").symlink_to(dotfiles / "config.toml")
    path, conflicting = agent_trust.codex_trust(main)
    assert conflicting == [] and (home / ".codex/config.toml").is_symlink()
    config = tomllib.loads((dotfiles / "config.toml").read_text())
    assert config["model"] == "o3" and config["projects"][str(main)] == {"trust_level": "trusted"}
    assert agent_trust.codex_untrusted(main) == []
    before = (dotfiles / "config.toml").read_text()
    assert agent_trust.codex_trust(main)[1] == [] and (dotfiles / "config.toml").read_text() == before
    # a config that declares its projects inline cannot take a table: named, and left as it was
    inline = 'projects = { "/elsewhere" = { trust_level = "trusted" } }\n'
    (dotfiles / "config.toml").write_text(inline)
    path, conflicting = agent_trust.codex_trust(main)
    assert (dotfiles / "config.toml").read_text() == inline and any("projects" in c for c in conflicting)
    # Gemini CLI: a folder its person does not trust stays so
    worktree = tmp_path / "wt"
    worktree.mkdir()
    rules = home / ".gemini/trustedFolders.json"
    rules.parent.mkdir()
    rules.write_text(json.dumps({str(worktree): "DO_NOT_TRUST"}))
    assert agent_trust.gemini_trust([worktree])[1] == [str(worktree)]
    assert json.loads(rules.read_text()) == {str(worktree): "DO_NOT_TRUST"} and not agent_trust.gemini_trusts(worktree)
    # Claude Code's state through a link too
    (dotfiles / "claude.json").write_text('{"theme": "dark"}')
    (home / ".claude.json").symlink_to(dotfiles / "claude.json")
    agent_trust.claude_trust(main)
    assert (home / ".claude.json").is_symlink() and agent_trust.claude_trusts(main)
    assert json.loads((dotfiles / "claude.json").read_text())["theme"] == "dark"


def test_a_hook_of_the_persons_beside_ours_survives_install_and_uninstall(tmp_path: Path) -> None:
    from git_fleet import agent_settings

    fleet = (str(tmp_path / ".git"), str(tmp_path))
    agent_settings.install(tmp_path, agent_settings.CLAUDE, fleet)
    path = tmp_path / ".claude/settings.local.json"
    data = json.loads(path.read_text())
    mine = {"type": "command", "command": "echo mine"}
    data["hooks"]["Stop"][0]["hooks"].append(mine)  # put into our group by hand
    path.write_text(json.dumps(data))
    agent_settings.install(tmp_path, agent_settings.CLAUDE, fleet)  # (every git fleet-up does)
    stops = json.loads(path.read_text())["hooks"]["Stop"]
    assert [h for g in stops for h in g["hooks"] if h == mine] == [mine] and len(stops) == 2
    assert agent_settings.problems(tmp_path, agent_settings.CLAUDE, fleet) == []
    agent_settings.uninstall(tmp_path, agent_settings.CLAUDE)
    assert json.loads(path.read_text()) == {"hooks": {"Stop": [{"hooks": [mine]}]}}


def test_a_question_waits_while_parallel_tools_go_on_and_resume_takes_the_fleets_session(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    common = str(tmp_path)

    def say(event: str, state: str | None, session: str = "fleet-1", **fields: str) -> None:
        agent_state.report(common, "api", "claude", event, state, session, **fields)

    monkeypatch.setenv("FLEET_AGENT", "api")  # the session git fleet-up started
    say("UserPromptSubmit", "working")
    say("PreToolUse", "working", tool="Bash", use="t1")
    say("PreToolUse", "working", tool="Read", use="t2")
    say("PermissionRequest", "needs you", tool="Bash", use="t1", message="permission to use Bash")
    say("PostToolUse", "working", tool="Read", use="t2")  # the other call ends: the question still waits
    state = agent_state.read(common, "api") or {}
    assert (state["state"], state["tool"], state["message"]) == ("needs you", "Bash", "permission to use Bash")
    say("PostToolUse", "working", tool="Bash", use="t1")  # answered: its own call ran
    assert (agent_state.read(common, "api") or {})["state"] == "working"
    monkeypatch.delenv("FLEET_AGENT")  # its person runs claude -p there by hand
    say("SessionStart", "idle", session="by-hand")
    state = agent_state.read(common, "api") or {}
    assert state["session"] == "by-hand" and state["launched_session"] == "fleet-1" and not state["launched"]


def test_ten_processes_appending_long_lines_at_once_lose_and_tear_none(tmp_path: Path) -> None:
    """Ten real processes (as ten agents' hooks are), each line near the longest a report makes."""
    import subprocess

    common = str(tmp_path)
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from git_fleet import agent_state\n"
              "for i in range(100): agent_state.report(sys.argv[2], sys.argv[3], 'claude', 'Notification', "
              "'needs you', 's', message='\u00e9' * 5000)")
    root = str(Path(agent_state.__file__).parent.parent)
    procs = [subprocess.Popen([sys.executable, "-I", "-S", "-c", script, root, common, agent])
             for agent in ("a", "b") * 5]
    assert [p.wait(timeout=60) for p in procs] == [0] * 10
    for agent in ("a", "b"):
        lines = Path(agent_state.directory(common, agent), "events").read_bytes().splitlines()
        assert len(lines) == 500 and all(len(line) <= agent_state.LINE_MAX for line in lines)
        assert {json.loads(line)["state"] for line in lines} == {"needs you"}
