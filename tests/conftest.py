"""Hermetic fixtures: every test gets its own HOME, git config, fixed identity and dates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from helpers import Sandbox, private_tmux

BIN = str(Path(sys.executable).parent)
SLOW = {line.strip() for line in (Path(__file__).parent / "slow.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests tests/slow.txt lists (measured: see tests/slow.py) as slow, so that
    `pytest -m "not slow"` is the quick loop."""
    for item in items:
        if item.nodeid in SLOW:
            item.add_marker(pytest.mark.slow)


def survivors(token: str) -> list[tuple[int, str]]:
    """Live processes (not zombies) whose environment carries `token`: everything a test started,
    however it was started and whoever its parent is now."""
    mark = f"FLEET_TEST_RUN={token}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                if mark not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                found.append((int(entry.name), fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()))
        except (OSError, IndexError):
            continue  # it ended while we looked
    return found


@pytest.fixture(autouse=True)
def no_process_outlives_its_test(hermetic: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every process a test starts carries a token in its environment; when the test (and its
    fixtures) end, none may be left running. Survivors are killed and the test errors."""
    if not os.path.isdir("/proc/self"):
        yield
        return
    token = uuid.uuid4().hex
    monkeypatch.setenv("FLEET_TEST_RUN", token)
    yield
    deadline = time.time() + 5
    while (left := survivors(token)) and time.time() < deadline:
        time.sleep(0.05)
    for pid, _ in left:
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if left:
        pytest.fail("processes outlived the test that started them:\n" + "\n".join(f"  {pid} {cmd}" for pid, cmd in left))


@pytest.fixture(autouse=True)
def hermetic(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Fleet Tester\n\temail = tester@example.com\n"
        "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
        "[protocol \"file\"]\n\tallow = always\n"
    )
    for var in list(os.environ):
        if var.startswith(("GIT_", "FLEET_", "XDG_")):
            monkeypatch.delenv(var)
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
        "GIT_EDITOR": "false",
        "GIT_CEILING_DIRECTORIES": str(home.parent.parent),
        "NO_COLOR": "1",
        "LC_ALL": "C.UTF-8",
        "PATH": BIN + os.pathsep + os.environ["PATH"],
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import pygit2
    from pygit2.enums import ConfigLevel

    for level in (ConfigLevel.SYSTEM, ConfigLevel.XDG, ConfigLevel.GLOBAL):
        pygit2.settings.search_path[level] = str(home)
    return home


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    return Sandbox(tmp_path, monkeypatch)


@pytest.fixture
def fleet_repo(sandbox: Sandbox) -> Sandbox:
    """A repository with a small tree, initialised for a fleet, cwd at its root."""
    sandbox.make_repo({
        "src/backend/api.py": "def api(): pass\n",
        "src/backend/README.md": "# backend\n",
        "src/frontend/app.js": "app()\n",
        "docs/guide.md": "# guide\n",
        "README.md": "# project\n",
    })
    sandbox.git("fleet-init")
    return sandbox


@pytest.fixture
def bus_repo(fleet_repo: Sandbox) -> Sandbox:
    """Two agents, api and docs, for the bus."""
    fleet_repo.add_agent("api", "src/backend/**")
    fleet_repo.add_agent("docs", "docs/**")
    return fleet_repo


@pytest.fixture
def fleet2(fleet_repo: Sandbox) -> Sandbox:
    """Two agents, a checkpoint of both, each with one commit in its zone."""
    sb = fleet_repo
    sb.add_agent("backend", "src/backend/**")
    sb.add_agent("web", "src/frontend/**")
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text() + '\n[checkpoints.phase-1]\nagents = ["backend", "web"]\n')
    sb.commit(sb.root / "repo-backend", {"src/backend/api.py": "def api(): return 2\n"}, "backend: api v2")
    sb.commit(sb.root / "repo-web", {"src/frontend/app.js": "app(2)\n"}, "web: app v2")
    return sb


@pytest.fixture
def hub(bus_repo: Sandbox) -> Sandbox:
    """The orchestrator's clone, sb.repo (agents api and docs, its config committed), with the bare
    hub.git as origin (over a path)."""
    sb = bus_repo
    sb.git("add", ".gitfleet.toml")
    sb.git("commit", "-qm", "the fleet")
    hub = sb.root / "hub.git"
    sb.git("init", "-q", "--bare", "-b", "main", str(hub))
    sb.git("remote", "add", "origin", str(hub))
    sb.git("push", "-q", "-u", "origin", "main")
    sb.git("config", "fleet.publishEvery", "0")  # (see test_machines.Machines.home)
    return sb


@pytest.fixture
def tmux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    private_tmux(tmp_path, monkeypatch)
    yield
    subprocess.run(["tmux", "kill-server"], capture_output=True)
