"""The fleet never runs an agent's code outside the agent's own reach: the git it runs on an
agent's worktree (status, a snapshot) takes the worktree's git dir from the repository's own
record, never from the `.git` file the agent can rewrite, and runs with the configuration that
starts commands (fsmonitor, hooks) off."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from helpers import Sandbox


def _a_git_dir_of_its_making(sb: Sandbox, worktree: Path, mark: Path) -> Path:
    """What an agent can make, as its own user: a git dir with the repository's objects (as an
    alternate), its branch, its index, and an fsmonitor that is a script of its own; then it
    points its worktree's `.git` at it."""
    common = sb.repo / ".git"
    evil = sb.root / "evil.git"
    sb.git("init", "-q", "--bare", str(evil), cwd=sb.root)
    (evil / "objects/info/alternates").write_text(str(common / "objects") + "\n")
    tip = sb.git("rev-parse", "fleet/api").out.strip()
    sb.git("update-ref", "refs/heads/fleet/api", tip, cwd=evil)
    (evil / "HEAD").write_text("ref: refs/heads/fleet/api\n")
    admin = next(d for d in (common / "worktrees").iterdir() if (d / "gitdir").read_text().strip() == str(worktree / ".git"))
    (evil / "index").write_bytes((admin / "index").read_bytes())
    hook = evil / "fsmonitor.sh"
    hook.write_text(f"#!/bin/sh\necho ran >> {mark}\nexit 1\n")
    hook.chmod(0o755)
    sb.git("config", "core.bare", "false", cwd=evil)
    sb.git("config", "core.fsmonitor", str(hook), cwd=evil)
    (worktree / ".git").write_text(f"gitdir: {evil}\n")
    return evil


def test_the_fleet_runs_no_fsmonitor_of_a_git_dir_the_agent_pointed_its_worktree_at(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    worktree = sb.add_agent("api", "src/backend/**")
    sb.commit(worktree, {"src/backend/api.py": "def api(): return 1\n"}, "api: one")
    mark = sb.root / "ran"
    _a_git_dir_of_its_making(sb, worktree, mark)
    (worktree / "src/backend/api.py").write_text("def api(): return 2\n")  # a change for status to see
    # the route works: git status run there by hand runs the agent's script
    subprocess.run(["git", "status", "--porcelain"], cwd=worktree, capture_output=True, env=os.environ)
    assert mark.exists()
    mark.unlink()
    rows = {r["agent"]: r for r in json.loads(sb.fleet("status", "--json").out)["agents"]}
    assert rows["api"]["dirty"] == 1  # it saw the change, through the repository's own record
    assert not mark.exists(), "status"
    sb.fleet("doctor", ok=None)
    assert not mark.exists(), "doctor"
    bare = sb.root / "hub.git"
    sb.git("init", "-q", "--bare", str(bare), cwd=sb.root)
    sb.git("remote", "add", "origin", str(bare))
    sb.fleet("teleport", "push", "api", "origin", ok=None)
    assert not mark.exists(), "teleport push"
    (worktree / "src/backend/api.py").write_text("def api(): return 1\n")  # (as committed: sync wants no work)
    sb.commit(sb.repo, {"docs/more.md": "more\n"}, "base moves on")
    res = sb.fleet("sync", "api", ok=None)
    assert not mark.exists(), f"sync: {res}"
    assert "more" in (worktree / "docs/more.md").read_text()  # (the sync did run, and moved its files)


def test_a_common_dir_of_the_agents_making_is_never_read_either(fleet_repo: Sandbox) -> None:
    """The worktree's record in the repository (`worktrees/ID/commondir`) sits where a commit
    needs to write: an agent can point it at a copy of the repository whose config runs a script."""
    sb = fleet_repo
    worktree = sb.add_agent("api", "src/backend/**")
    common = sb.repo / ".git"
    mark = sb.root / "ran"
    copy = sb.root / "copy.git"
    sb.run(["cp", "-a", str(common), str(copy)])
    hook = sb.root / "fsmonitor.sh"
    hook.write_text(f"#!/bin/sh\necho ran >> {mark}\nexit 1\n")
    hook.chmod(0o755)
    sb.git("config", "--file", str(copy / "config"), "core.fsmonitor", str(hook))
    admin = next(d for d in (common / "worktrees").iterdir() if (d / "gitdir").read_text().strip() == str(worktree / ".git"))
    (admin / "commondir").write_text(str(copy) + "\n")
    (worktree / "src/backend/api.py").write_text("changed\n")
    subprocess.run(["git", "status", "--porcelain"], cwd=worktree, capture_output=True)
    assert mark.exists()  # (the route works: git run there by hand reads the copy's config)
    mark.unlink()
    rows = {r["agent"]: r for r in json.loads(sb.fleet("status", "--json").out)["agents"]}
    assert rows["api"]["dirty"] == 1 and not mark.exists()
