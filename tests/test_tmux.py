"""The fleet in real tmux, on a private server (TMUX_TMPDIR), never the user's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import Sandbox

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")


@pytest.fixture
def tmux_fleet(fleet_repo: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    sock = tmp_path / "tmux"
    sock.mkdir()
    monkeypatch.setenv("TMUX_TMPDIR", str(sock))
    monkeypatch.delenv("TMUX", raising=False)
    cfg = fleet_repo.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text()
                   .replace('command = "claude --session-id {session_id} --name {session} --model {model}"',
                            'command = "echo started {agent} {session} {model} {branch} $FLEET_AGENT > .fleet/ran; '
                            'date +%s.%N > .fleet/at; exec sleep 600"')
                   .replace('resume = "claude --resume {session_id}"',
                            'resume = "echo resumed {session} > .fleet/ran; exec sleep 600"'))
    fleet_repo.add_agent("api", "src/backend/**", extra=("--model", "opus"))
    fleet_repo.add_agent("web", "src/frontend/**")
    tmux = shutil.which("tmux") or "tmux"
    yield fleet_repo
    subprocess.run([tmux, "kill-server"], capture_output=True)


def windows(sb: Sandbox) -> dict[str, tuple[str, str]]:
    out = subprocess.run(["tmux", "list-windows", "-a", "-F", "#{window_name}\t#{pane_current_path}\t#{pane_pid}"],
                         capture_output=True, text=True).stdout
    return {w: (p, pid) for w, p, pid in (line.split("\t") for line in out.splitlines())}


def wait_for(path: Path, timeout: float = 10) -> str:
    """The file's text once it has a whole line (the shell may be half-way through writing it)."""
    deadline = time.time() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if text.endswith("\n"):
            return text
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_up_starts_one_window_per_agent_in_its_worktree(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    sb.fleet("up", "--detach", "--stagger", "0")
    wins = windows(sb)
    assert set(wins) == {"orchestrator", "api", "web"}
    assert wins["orchestrator"][0] == str(sb.repo)
    assert wins["api"][0] == str(sb.root / "repo-api") and wins["web"][0] == str(sb.root / "repo-web")
    assert wait_for(sb.root / "repo-api/.fleet/ran") == "started api api opus fleet/api api\n"
    assert wait_for(sb.root / "repo-web/.fleet/ran") == "started web web sonnet fleet/web web\n"
    rows = {r["agent"]: r for r in json.loads(sb.fleet("ps", "--json").out)}
    assert rows["api"]["running"] and rows["api"]["model"] == "opus" and rows["api"]["since"]
    # agents already running are left alone
    res = sb.fleet("up", "--detach", "--stagger", "0")
    assert "api: already running" in res.err and windows(sb)["api"][1] == wins["api"][1]  # same process


def test_starts_are_staggered(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    sb.fleet("up", "--detach", "--stagger", "1")
    first = float(wait_for(sb.root / "repo-api/.fleet/at"))
    second = float(wait_for(sb.root / "repo-web/.fleet/at"))
    assert second - first >= 0.9


def test_up_says_each_start_and_each_wait_on_a_terminal(tmux_fleet: Sandbox) -> None:
    """`git fleet-up --stagger 20` with three agents showed nothing for 40 s: on a terminal each
    start and each wait is said as it happens; a script's output stays as it was (empty)."""
    from test_first_hour import in_a_terminal

    sb = tmux_fleet
    code, out = in_a_terminal(sb, ["git", "fleet-up", "--detach", "--stagger", "0.5"])
    assert code == 0, out
    session = next(w for w in subprocess.run(["tmux", "list-sessions", "-F", "#{session_name}"], capture_output=True,
                                             text=True).stdout.split())
    assert out.splitlines() == [f"api: started in {session}:api",
                                "waiting 0.5 s before starting web (stagger, against rate limits)",
                                f"web: started in {session}:web"]
    sb.fleet("down", "--yes")
    assert sb.run(["git", "fleet-up", "--detach", "--stagger", "0"]).err == ""


def test_a_command_that_exits_at_once_is_named_and_the_others_run(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    sb.fleet("set", "web", "--command", "exit 3")
    res = sb.fleet("up", "--detach", "--stagger", "0", ok=False)
    assert res.code == 1 and "agent 'web': its command exited at once" in res.err
    assert wait_for(sb.root / "repo-api/.fleet/ran").startswith("started api")
    rows = {r["agent"]: r["running"] for r in json.loads(sb.fleet("ps", "--json").out)}
    assert rows == {"api": True, "web": False}


def test_down_asks_first_and_resume_brings_the_fleet_back(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    sb.fleet("up", "--detach", "--stagger", "0")
    wait_for(sb.root / "repo-api/.fleet/ran")
    res = sb.fleet("down", ok=False)  # no terminal to ask on
    assert res.code == 1 and "still running: api, web" in res.err and "--yes" in res.err
    sb.fleet("down", "--yes", "web")
    assert set(windows(sb)) == {"orchestrator", "api"}
    # a killed tmux server (a reboot): up brings every agent back with its resume command
    subprocess.run(["tmux", "kill-server"], check=True)
    (sb.root / "repo-api/.fleet/ran").unlink()
    sb.fleet("up", "--detach", "--stagger", "0")
    assert wait_for(sb.root / "repo-api/.fleet/ran") == "resumed api\n"
    res = sb.fleet("down", "--yes")  # every agent: what up opened is closed, the orchestrator's idle shell too
    assert not windows(sb) and "closed tmux session fleet-repo-" in res.err
    (sb.root / "repo-web/.fleet/ran").unlink()
    sb.fleet("resume", "web")
    assert wait_for(sb.root / "repo-web/.fleet/ran") == "resumed web\n"


def test_without_tmux_there_is_a_clear_error(tmux_fleet: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    os.symlink(shutil.which("git") or "/usr/bin/git", bare / "git")
    monkeypatch.setenv("PATH", str(bare))
    res = tmux_fleet.fleet("up", "--detach", ok=False)
    assert res.code == 1 and "tmux is not installed" in res.err


def panes(sb: Sandbox) -> dict[str, tuple[str, str, str]]:
    """Agents' panes as tmux shows them: agent -> (window, directory, pane id)."""
    out = subprocess.run(["tmux", "list-panes", "-a", "-F", "#{@fleet-agent}\t#{window_name}\t#{pane_current_path}\t#{pane_id}"],
                         capture_output=True, text=True).stdout
    return {a: (w, p, i) for a, w, p, i in (line.split("\t") for line in out.splitlines()) if a}


def test_tiled_layout_puts_every_agent_in_one_window(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    sb.add_agent("docs", "docs/**")
    sb.fleet("up", "--detach", "--stagger", "0", "--layout", "tiled")
    assert set(windows(sb)) == {"orchestrator", "fleet"}
    found = panes(sb)
    assert {a: w for a, (w, _, _) in found.items()} == {"api": "fleet", "web": "fleet", "docs": "fleet"}
    assert found["web"][1] == str(sb.root / "repo-web")
    assert wait_for(sb.root / "repo-docs/.fleet/ran") == "started docs docs sonnet fleet/docs docs\n"
    rows = {r["agent"]: r for r in json.loads(sb.fleet("ps", "--json").out)}
    assert rows["web"]["running"] and rows["web"]["window"] == "fleet" and rows["web"]["pane"] == found["web"][2]
    # one agent stopped: its pane goes, the others keep theirs; up puts it back in the same window
    sb.fleet("down", "--yes", "web")
    assert set(panes(sb)) == {"api", "docs"} and panes(sb)["api"] == found["api"]
    sb.fleet("up", "--detach", "--stagger", "0", "--layout", "tiled")
    assert set(windows(sb)) == {"orchestrator", "fleet"} and panes(sb)["web"][0] == "fleet"
    sb.fleet("down", "--yes")
    assert not windows(sb)  # the fleet window went with its last pane, and the idle session with it


def test_layout_comes_from_the_config_and_the_flag_wins(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('layout = "windows"', 'layout = "tiled"'))
    sb.fleet("up", "--detach", "--stagger", "0", "api")
    sb.fleet("up", "--detach", "--stagger", "0", "--layout", "windows", "web")
    assert {a: w for a, (w, _, _) in panes(sb).items()} == {"api": "fleet", "web": "web"}
    res = sb.fleet("up", "--detach", "--layout", "grid", ok=False)
    assert res.code == 2 and "'grid' is not one of 'windows', 'tiled'" in res.err


class Terminal:
    """A real terminal (a pseudo-terminal) running a command, as a user at a keyboard would."""

    def __init__(self, args: list[str], cwd: Path):
        import pty

        self.master, slave = pty.openpty()
        env = {**os.environ, "TERM": "xterm"}
        env.pop("TMUX", None)
        self.proc = subprocess.Popen(args, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True)
        os.close(slave)

    def drain(self) -> None:
        import select

        while select.select([self.master], [], [], 0)[0]:
            try:
                if not os.read(self.master, 65536):
                    return
            except OSError:
                return

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def clients() -> list[tuple[str, str]]:
    """tmux's attached clients: (session, the pane they show)."""
    out = subprocess.run(["tmux", "list-clients", "-F", "#{client_session}\t#{pane_id}"],
                         capture_output=True, text=True).stdout
    return [(s, p) for s, p in (line.split("\t") for line in out.splitlines())]


def until(check: Any, term: Terminal, timeout: float = 10) -> Any:
    deadline = time.time() + timeout
    while not (value := check()):
        assert time.time() < deadline, "tmux never got there"
        term.drain()
        time.sleep(0.05)
    return value


def test_outside_tmux_attach_opens_the_agents_pane_in_the_terminal(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    sb.fleet("up", "--detach", "--stagger", "0")
    session = json.loads(sb.fleet("ps", "--json").out)[0]["tmux"]
    term = Terminal(["git", "fleet-attach", "web"], sb.repo)
    try:
        assert until(clients, term) == [(session, panes(sb)["web"][2])]
    finally:
        term.close()


def test_up_from_a_terminal_attaches_and_inside_tmux_it_switches(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    # the user works in a tmux session of their own, on the same server, at a real terminal
    # (a plain sh: a login shell's profile would reset PATH to one without this git-fleet)
    subprocess.run(["tmux", "new-session", "-d", "-s", "mine", "-c", str(sb.repo), "sh"], check=True)
    term = Terminal(["tmux", "attach-session", "-t", "=mine"], sb.repo)
    try:
        until(lambda: clients() and clients()[0][0] == "mine", term)
        # and types git fleet-up at its prompt: the client switches to the fleet's session
        subprocess.run(["tmux", "send-keys", "-t", "=mine:", "git fleet-up --stagger 0", "Enter"], check=True)
        switched = until(lambda: [c for c in clients() if c[0].startswith("fleet-")], term)
        assert len(clients()) == 1 and switched[0][0] == json.loads(sb.fleet("ps", "--json").out)[0]["tmux"]
        assert set(panes(sb)) == {"api", "web"}
    finally:
        term.close()


def test_fleet_size_limits_apply_to_up(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace("warn_agents = 7", "warn_agents = 0").replace("max_agents = 10", "max_agents = 1"))
    res = sb.fleet("up", "--detach", "--stagger", "0", ok=False)
    assert res.code == 1 and "refusing to start 2 agents: the limit is 1" in res.err and "--force" in res.err
    assert windows(sb) == {}  # nothing started, not even the session
    res = sb.fleet("up", "--detach", "--stagger", "0", "--force")
    assert "warning: starting 2 agents" in res.err and set(panes(sb)) == {"api", "web"}


def test_an_agent_without_its_worktree_is_named_and_the_others_start(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    shutil.rmtree(sb.root / "repo-web")
    res = sb.fleet("up", "--detach", "--stagger", "0", ok=False)
    assert res.code == 1
    assert f"error: agent 'web' has no worktree in this repository: the one at {sb.root / 'repo-web'} is gone" in res.err
    assert f"deleted: git worktree prune && git worktree add {sb.root / 'repo-web'} fleet/web" in res.err
    assert set(panes(sb)) == {"api"} and wait_for(sb.root / "repo-api/.fleet/ran").startswith("started api")
    # the hint does what it says
    sb.git("worktree", "prune")
    sb.git("worktree", "add", "-q", str(sb.root / "repo-web"), "fleet/web")
    sb.fleet("up", "--detach", "--stagger", "0")
    assert wait_for(sb.root / "repo-web/.fleet/ran").startswith("started web")


def test_down_of_every_agent_keeps_a_session_where_the_orchestrator_works(tmux_fleet: Sandbox) -> None:
    """The orchestrator's window runs something (not an idle shell): it is the person's, and stays."""
    sb = tmux_fleet
    sb.fleet("up", "--detach", "--stagger", "0", "--watch", "none")
    subprocess.run(["tmux", "send-keys", "-t", "orchestrator", "exec sleep 300", "Enter"], check=True)
    deadline = time.time() + 10
    while subprocess.run(["tmux", "display-message", "-p", "-t", "orchestrator", "#{pane_current_command}"],
                         capture_output=True, text=True).stdout.strip() != "sleep":
        assert time.time() < deadline
        time.sleep(0.05)
    res = sb.fleet("down", "--yes")
    assert set(windows(sb)) == {"orchestrator"} and "closed" not in res.err


def test_resume_says_when_the_agent_dies_at_once(tmux_fleet: Sandbox) -> None:
    """fleet-up named an agent whose command exited at once; fleet-resume said nothing and exited 0."""
    sb = tmux_fleet
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('resume = "echo resumed {session} > .fleet/ran; exec sleep 600"',
                                           'resume = "exit 3"'))
    res = sb.run(["git", "fleet-resume", "web"], ok=False)
    # (with its status when tmux has it in time: under load it may not)
    assert res.code == 1 and "agent 'web': its resume command exited at once" in res.err
    assert "git fleet-attach web" in res.err


def test_attach_without_a_terminal_says_so(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    sb.fleet("up", "--detach", "--stagger", "0")
    res = sb.run(["git", "fleet-attach", "web"], input="", ok=False)
    assert res.code == 1 and res.err.startswith("error: attaching needs a terminal, and there is none here\n")
    assert "tmux capture-pane -p -t %" in res.err


def test_rm_refuses_while_the_agent_runs_and_works_once_it_is_down(tmux_fleet: Sandbox) -> None:
    """fleet-rm pulled the worktree out from under a running agent, which went on in a deleted
    directory that fleet-ps and fleet-down no longer knew."""
    sb = tmux_fleet
    sb.fleet("up", "--detach", "--stagger", "0")
    wait_for(sb.root / "repo-web/.fleet/ran")
    res = sb.run(["git", "fleet-rm", "--force", "web"], ok=False)
    assert res.code == 1 and "agent 'web' is still running in" in res.err and "(sleep)" in res.err
    assert "git fleet-down web" in res.err and (sb.root / "repo-web").is_dir()
    sb.fleet("down", "--yes", "web")
    sb.run(["git", "fleet-rm", "web"])
    assert not (sb.root / "repo-web").exists()


def test_up_in_a_fleet_across_machines_starts_only_the_agents_no_other_machine_holds(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    hub = sb.root / "hub.git"
    sb.git("init", "-q", "--bare", "-b", "main", str(hub))
    sb.git("add", ".gitfleet.toml")
    sb.git("commit", "-qm", "the fleet")
    sb.git("remote", "add", "origin", str(hub))
    sb.git("push", "-q", "-u", "origin", "main")
    sb.fleet("init", "--remote", "origin")
    box = sb.root / "box"
    sb.git("clone", "-q", str(hub), str(box), cwd=sb.root)
    sb.git("fleet-join", "web", cwd=box)
    box_id = sb.git("config", "fleet.machine", cwd=box).out.strip()
    res = sb.fleet("up", "--detach", "--stagger", "0", ok=False)
    assert f"agent 'web' is held by machine {box_id}" in res.err
    assert set(windows(sb)) == {"orchestrator", "api"}
    # api is held for this machine now: the box cannot join it
    assert "is held by machine" in sb.git("fleet-join", "api", cwd=box, ok=False).err
