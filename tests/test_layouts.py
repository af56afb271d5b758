"""Repositories whose git dir is kept apart from the work tree, used as their users use them:
`git init --separate-git-dir` (the work tree has a `.git` file) and `core.worktree` (the work
tree has no `.git` at all; git is reached with GIT_DIR or `git --git-dir`). And SHA-256
repositories, which git-fleet refuses before it writes anything."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import Result, Sandbox

FILES = {"src/api/orders.py": "orders = 1\n", "src/web/cart.js": "cart(1)\n", "README.md": "# shop\n"}


@dataclass
class Layout:
    sb: Sandbox
    work: Path  # the main worktree
    git_dir: Path
    main_env: dict[str, str] = field(default_factory=dict)  # what its user sets to reach the repository

    def main(self, *args: str, ok: bool | None = True, env: Mapping[str, str] | None = None) -> Result:
        """A git command in the main worktree, as this layout's user types it."""
        return self.sb.run(["git", *args], cwd=self.work, ok=ok, env={**self.main_env, **(env or {})})

    def agent(self, name: str, *args: str, ok: bool | None = True) -> Result:
        return self.sb.run(["git", *args], cwd=self.sb.root / f"shop-{name}", ok=ok)


@pytest.fixture(params=["separate-git-dir", "core.worktree"])
def layout(sandbox: Sandbox, request: pytest.FixtureRequest) -> Layout:
    sb = sandbox
    work, git_dir = sb.root / "shop", sb.root / "store" / "shop.git"
    work.mkdir()
    git_dir.parent.mkdir()
    if request.param == "separate-git-dir":
        sb.git("init", "-q", f"--separate-git-dir={git_dir}", str(work), cwd=sb.root)
        lay = Layout(sb, work, git_dir)
    else:  # git init with both places given writes core.worktree; its user sets GIT_DIR from then on
        sb.git(f"--git-dir={git_dir}", f"--work-tree={work}", "init", "-q", cwd=sb.root)
        assert sb.git(f"--git-dir={git_dir}", "config", "core.worktree", cwd=sb.root).out.strip() == str(work)
        assert not (work / ".git").exists()
        lay = Layout(sb, work, git_dir, {"GIT_DIR": str(git_dir)})
    sb.repo = work
    sb.monkeypatch.chdir(work)
    sb.write_files(FILES, work)
    lay.main("add", "-A")
    lay.main("commit", "-qm", "initial")
    return lay


def test_the_whole_path_works_where_the_git_dir_is_kept_apart(layout: Layout) -> None:
    lay, sb = layout, layout.sb
    lay.main("fleet-init")
    assert (lay.work / ".gitfleet.toml").is_file() and not (lay.git_dir / ".gitfleet.toml").exists()
    assert (lay.git_dir / "fleet/main-worktree").read_text() == f"{lay.work}\n"
    lay.main("fleet-add", "api", "--zone", "src/api/**")
    lay.main("fleet-add", "web", "--zone", "src/web/**")
    assert (sb.root / "shop-api/src/api/orders.py").is_file()
    cfg = lay.work / ".gitfleet.toml"
    cfg.write_text(cfg.read_text() + '\n[checkpoints.v1]\nagents = ["api", "web"]\n')

    # the hook holds the zone in an agent's worktree, and lets its own paths through
    sb.write_files({"src/web/cart.js": "cart(api was here)\n", "src/api/orders.py": "orders = 2\n"},
                   sb.root / "shop-api")
    lay.agent("api", "add", "-A")
    res = lay.agent("api", "commit", "-qm", "orders v2", ok=False)
    assert "error: commit rejected: agent 'api' changed 1 path(s) outside its zone" in res.err
    assert "modified src/web/cart.js  (owned by 'web')" in res.err
    lay.agent("api", "restore", "--staged", "--worktree", "--", "src/web/cart.js")
    lay.agent("api", "commit", "-qm", "orders v2")
    sb.write_files({"src/web/cart.js": "cart(2)\n"}, sb.root / "shop-web")
    lay.agent("web", "commit", "-qam", "cart v2")

    # status and doctor, from the main worktree and from an agent's
    for run in (lambda *a: lay.main(*a, ok=None), lambda *a: lay.agent("web", *a, ok=None)):
        status = json.loads(run("fleet-status", "--json").out)
        assert [(r["agent"], r["ahead"], r["dirty"]) for r in status["agents"]] == [("api", 1, 0), ("web", 1, 0)]
        found = {c["check"]: c for c in json.loads(run("fleet-doctor", "--json").out)}
        assert found["worktrees"]["ok"] and found["hooks"]["ok"] and found["config"]["ok"], found

    # the checkpoint lands, and the main work tree follows
    res = lay.main("fleet-merge", "--checkpoint", "v1", "-v")
    assert "merged fleet/api" in res.err and "merged fleet/web" in res.err
    assert (lay.work / "src/api/orders.py").read_text() == "orders = 2\n"
    assert (lay.work / "src/web/cart.js").read_text() == "cart(2)\n"
    assert lay.main("status", "--porcelain").out == "?? .gitfleet.toml\n"
    assert lay.main("log", "-1", "--format=%s").out == "Merge fleet/web (agent web, checkpoint v1)\n"
    assert not list(lay.git_dir.rglob("*.lock"))


def test_agent_commands_never_reach_the_main_worktree_through_git_dir(layout: Layout) -> None:
    """The orchestrator's GIT_DIR (or `git --git-dir`) is for the main worktree: git-fleet's own
    look into an agent's worktree, and what it runs there, go by the agent's worktree."""
    lay, sb = layout, layout.sb
    lay.main("fleet-init")
    lay.main("fleet-add", "web", "--zone", "src/web/**")
    web = sb.root / "shop-web"
    (web / "src/web/wip.js").write_text("wip\n")
    git_dir = f"--git-dir={lay.git_dir}"
    res = sb.run(["git", git_dir, "fleet-run", "web", "--", "git", "status", "--porcelain"], cwd=lay.work)
    assert res.out == "?? src/web/wip.js\n"
    status = json.loads(sb.run(["git", git_dir, "fleet-status", "--json"], cwd=lay.work).out)
    assert status["agents"][0]["dirty"] == 1
    sb.write_files({"README.md": "# shop, v2\n"}, lay.work)
    lay.main("commit", "-qam", "readme v2")
    res = lay.main("fleet-sync", "web", ok=False)
    assert "error: web: not synced: uncommitted work in src/web/wip.js" in res.err
    (web / "src/web/wip.js").unlink()
    lay.main("fleet-sync", "web")
    assert (web / "README.md").read_text() == "# shop, v2\n"
    assert lay.agent("web", "status", "--porcelain").out == ""
    assert lay.main("status", "--porcelain").out == "?? .gitfleet.toml\n"


def test_sha256_repositories_are_refused_before_anything_is_written(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.git("init", "-q", "--object-format=sha256", str(sb.repo), cwd=sb.root)
    sb.write_files(FILES)
    sb.git("add", "-A")
    sb.git("commit", "-qm", "initial")
    hooks_before = sorted(p.name for p in (sb.repo / ".git/hooks").iterdir())
    for args in (["fleet-init"], ["fleet-init", "--interactive"], ["fleet-add", "api", "--zone", "src/api/**"],
                 ["fleet-status"]):
        res = sb.git(*args, ok=False)
        assert res.code == 2, res
        assert res.err.startswith(f"error: {sb.repo / '.git'}: git-fleet does not work with SHA256 repositories yet\n")
        assert "hint: it needs a repository with SHA-1 object names" in res.err and "Traceback" not in res.err
    assert not (sb.repo / ".gitfleet.toml").exists() and not (sb.repo / ".git/fleet").exists()
    assert sorted(p.name for p in (sb.repo / ".git/hooks").iterdir()) == hooks_before
    assert sb.git("status", "--porcelain").out == ""
