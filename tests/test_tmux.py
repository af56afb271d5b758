"""The fleet in real tmux, on a private server (TMUX_TMPDIR), never the user's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

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
                   .replace('command = "claude --name {session} --model {model}"',
                            'command = "echo started {agent} {session} {model} {branch} $FLEET_AGENT > .fleet/ran; '
                            'date +%s.%N > .fleet/at; exec sleep 600"')
                   .replace('resume = "claude --resume {session}"',
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
    assert wins["api"][0] == str(sb.root / "agent-api") and wins["web"][0] == str(sb.root / "agent-web")
    assert wait_for(sb.root / "agent-api/.fleet/ran") == "started api api opus fleet/api api\n"
    assert wait_for(sb.root / "agent-web/.fleet/ran") == "started web web sonnet fleet/web web\n"
    rows = {r["agent"]: r for r in json.loads(sb.fleet("ps", "--json").out)}
    assert rows["api"]["running"] and rows["api"]["model"] == "opus" and rows["api"]["since"]
    # agents already running are left alone
    res = sb.fleet("up", "--detach", "--stagger", "0")
    assert "api: already running" in res.err and windows(sb)["api"][1] == wins["api"][1]  # same process


def test_starts_are_staggered(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    sb.fleet("up", "--detach", "--stagger", "1")
    first = float(wait_for(sb.root / "agent-api/.fleet/at"))
    second = float(wait_for(sb.root / "agent-web/.fleet/at"))
    assert second - first >= 0.9


def test_a_command_that_exits_at_once_is_named_and_the_others_run(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    sb.fleet("set", "web", "--command", "exit 3")
    res = sb.fleet("up", "--detach", "--stagger", "0", ok=False)
    assert res.code == 1 and "agent 'web': its command exited at once" in res.err
    assert wait_for(sb.root / "agent-api/.fleet/ran").startswith("started api")
    rows = {r["agent"]: r["running"] for r in json.loads(sb.fleet("ps", "--json").out)}
    assert rows == {"api": True, "web": False}


def test_down_asks_first_and_resume_brings_the_fleet_back(tmux_fleet: Sandbox) -> None:
    sb = tmux_fleet
    sb.fleet("up", "--detach", "--stagger", "0")
    wait_for(sb.root / "agent-api/.fleet/ran")
    res = sb.fleet("down", ok=False)  # no terminal to ask on
    assert res.code == 1 and "still running: api, web" in res.err and "--yes" in res.err
    sb.fleet("down", "--yes", "web")
    assert set(windows(sb)) == {"orchestrator", "api"}
    # a killed tmux server (a reboot): up brings every agent back with its resume command
    subprocess.run(["tmux", "kill-server"], check=True)
    (sb.root / "agent-api/.fleet/ran").unlink()
    sb.fleet("up", "--detach", "--stagger", "0")
    assert wait_for(sb.root / "agent-api/.fleet/ran") == "resumed api\n"
    sb.fleet("down", "--yes")
    assert set(windows(sb)) == {"orchestrator"}
    (sb.root / "agent-web/.fleet/ran").unlink()
    sb.fleet("resume", "web")
    assert wait_for(sb.root / "agent-web/.fleet/ran") == "resumed web\n"


def test_without_tmux_there_is_a_clear_error(tmux_fleet: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    os.symlink(shutil.which("git") or "/usr/bin/git", bare / "git")
    monkeypatch.setenv("PATH", str(bare))
    res = tmux_fleet.fleet("up", "--detach", ok=False)
    assert res.code == 1 and "tmux is not installed" in res.err
