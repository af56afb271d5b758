"""An agent's worktree moved by hand (`mv` + `git worktree repair`, or `git worktree move`): sync and
prune go where git has the agent's branch checked out, never to the path the config names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import Sandbox


@pytest.fixture(params=["mv and repair", "worktree move"])
def moved(fleet2: Sandbox, request: pytest.FixtureRequest) -> tuple[Sandbox, Path]:
    """fleet2 with web's worktree moved elsewhere, and a clone of the repository where the config
    says web's worktree is: a directory git does not list as this repository's."""
    sb = fleet2
    old, new = sb.root / "repo-web", sb.root / "moved" / "web"
    new.parent.mkdir()
    if request.param == "mv and repair":
        shutil.move(old, new)
        sb.git("worktree", "repair", str(new))
    else:
        sb.git("worktree", "move", str(old), str(new))
    sb.git("clone", "-q", str(sb.repo), str(old), cwd=sb.root)
    assert sb.git("branch", "--show-current", cwd=new).out.strip() == "fleet/web"
    return sb, new


def test_sync_moves_the_moved_worktree_with_its_branch(moved: tuple[Sandbox, Path]) -> None:
    sb, web = moved
    sb.commit(sb.repo, {"README.md": "# main moved on\n"}, "orchestrator: readme")
    res = sb.fleet("sync", "-v", "web")
    assert "web: merged" in res.err
    assert sb.git("merge-base", "--is-ancestor", "main", "fleet/web", ok=None).code == 0
    assert (web / "README.md").read_text() == "# main moved on\n"  # the moved worktree followed
    assert sb.git("status", "--porcelain", cwd=web).out == ""
    # a plain commit there afterwards keeps the base's change
    (web / "src/frontend/app.js").write_text("app(3)\n")
    sb.git("commit", "-qam", "web: app v3", cwd=web)
    assert sb.git("show", "fleet/web:README.md").out == "# main moved on\n"
    assert sb.git("diff", "--name-only", "fleet/web~1", "fleet/web").out == "src/frontend/app.js\n"
    assert (sb.root / "repo-web/README.md").read_text() == "# project\n"  # the clone is not ours


def test_sync_refuses_a_dirty_moved_worktree(moved: tuple[Sandbox, Path]) -> None:
    sb, web = moved
    sb.commit(sb.repo, {"README.md": "# main moved on\n"}, "orchestrator: readme")
    (web / "src/frontend/wip.js").write_text("wip\n")
    before = sb.head("fleet/web")
    res = sb.fleet("sync", "web", ok=False)
    assert res.code == 1 and "error: web: not synced: uncommitted work in src/frontend/wip.js" in res.err
    assert sb.head("fleet/web") == before
    assert (web / "README.md").read_text() == "# project\n"
    assert sb.git("status", "--porcelain", cwd=web).out == "?? src/frontend/wip.js\n"


def merged_web(sb: Sandbox) -> None:
    """web's work is all in main; backend's is not."""
    sb.fleet("merge", "web")
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('\n[checkpoints.phase-1]\nagents = ["backend", "web"]\n', ""))


@pytest.mark.parametrize("work", ["modified", "untracked"])
def test_prune_keeps_an_agent_whose_moved_worktree_holds_work(moved: tuple[Sandbox, Path], work: str) -> None:
    sb, web = moved
    merged_web(sb)
    if work == "modified":
        (web / "src/frontend/app.js").write_text("app(unsaved)\n")
    else:
        (web / "src/frontend/new.js").write_text("new\n")
    plan = json.loads(sb.fleet("prune", "-n", "--json").out)
    assert plan["would_remove"] == []
    kept = {k["agent"]: k["why"] for k in plan["kept"]}
    assert kept["web"].startswith("uncommitted or untracked work: src/frontend/")
    sb.fleet("prune", "--yes")
    assert web.is_dir() and "fleet/web" in sb.branches()
    assert [a["agent"] for a in json.loads(sb.fleet("list", "--json").out)] == ["backend", "web"]


def test_prune_removes_the_moved_worktree(moved: tuple[Sandbox, Path]) -> None:
    sb, web = moved
    merged_web(sb)
    plan = json.loads(sb.fleet("prune", "-n", "--json").out)
    assert [(c["agent"], c["worktree"]) for c in plan["would_remove"]] == [("web", str(web))]
    res = sb.fleet("prune", "--yes")
    assert "removed web" in res.err
    assert not web.exists()
    assert str(web) not in sb.git("worktree", "list").out
    assert "fleet/web" not in sb.branches()
    assert (sb.root / "repo-web/.git").is_dir()  # the clone where the config pointed is left alone
    assert [a["agent"] for a in json.loads(sb.fleet("list", "--json").out)] == ["backend"]


def stop_mid_rebase(sb: Sandbox, where: Path) -> None:
    """A rebase in `where` stopped by a failing --exec: HEAD detached, the work tree clean, and the
    branch still checked out there as far as git is concerned."""
    sb.git("rebase", "-x", "false", "HEAD~1", cwd=where, ok=False)
    assert sb.git("branch", "--show-current", cwd=where).out == ""
    assert sb.git("status", "--porcelain", cwd=where).out == ""


def test_sync_leaves_a_branch_that_is_being_rebased_in_its_moved_worktree(moved: tuple[Sandbox, Path]) -> None:
    sb, web = moved
    sb.commit(sb.repo, {"README.md": "# main moved on\n"}, "orchestrator: readme")
    stop_mid_rebase(sb, web)
    before, head = sb.head("fleet/web"), sb.head("HEAD", cwd=web)
    res = sb.fleet("sync", "web", ok=False)
    assert res.code == 1 and f"error: web: not synced: fleet/web is being rebased or bisected in {web}" in res.err
    assert sb.head("fleet/web") == before and sb.head("HEAD", cwd=web) == head
    assert (web / "README.md").read_text() == "# project\n"
    sb.git("rebase", "--continue", cwd=web)
    assert sb.git("status", "--porcelain", cwd=web).out == ""


def test_prune_keeps_an_agent_whose_moved_worktree_is_mid_rebase(moved: tuple[Sandbox, Path]) -> None:
    sb, web = moved
    merged_web(sb)
    stop_mid_rebase(sb, web)
    plan = json.loads(sb.fleet("prune", "-n", "--json").out)
    assert plan["would_remove"] == []
    assert {k["agent"]: k["why"] for k in plan["kept"]}["web"] == (
        f"its worktree {web} is rebasing or bisecting fleet/web: finish that first")
    sb.fleet("prune", "--yes")
    assert web.is_dir() and "fleet/web" in sb.branches()
    rows = {a["agent"]: a for a in json.loads(sb.fleet("list", "--json").out)}
    assert rows["web"]["worktree"] == str(web) and rows["web"]["state"] == "ok"


def test_the_hook_knows_the_agent_of_a_moved_worktree_mid_rebase(moved: tuple[Sandbox, Path]) -> None:
    """Detached by a rebase, away from its configured path, the worktree is still web's: the branch
    being rebased says so, as it does to git."""
    sb, web = moved
    stop_mid_rebase(sb, web)
    sb.write_files({"src/backend/api.py": "web was here\n"}, web)
    sb.git("add", "src/backend/api.py", cwd=web)
    res = sb.git("commit", "-qm", "amend on the way", cwd=web, ok=False)
    assert "error: commit rejected: agent 'web' changed 1 path(s) outside its zone" in res.err
    sb.git("restore", "--staged", "--worktree", "--", "src/backend/api.py", cwd=web)
    sb.commit(web, {"src/frontend/app.js": "app(rebased)\n"}, "in its zone, mid-rebase")
