"""Hermetic fixtures: every test gets its own HOME, git config, fixed identity and dates."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from helpers import Sandbox

BIN = str(Path(sys.executable).parent)


@pytest.fixture(autouse=True)
def hermetic(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Fleet Tester\n\temail = tester@example.com\n"
        "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
        "[protocol \"file\"]\n\tallow = always\n"
    )
    for var in list(os.environ):
        if var.startswith(("GIT_", "FLEET_")):
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
