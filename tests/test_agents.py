"""git fleet-add, fleet-rm and fleet-list on real repositories and worktrees."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from helpers import Sandbox


def registered(sb: Sandbox) -> dict[str, dict[str, object]]:
    agents: dict[str, dict[str, object]] = tomllib.loads((sb.repo / ".gitfleet.toml").read_text()).get("agents", {})
    return agents


def worktree_paths(sb: Sandbox) -> list[str]:
    return [line[9:] for line in sb.git("worktree", "list", "--porcelain").out.splitlines() if line.startswith("worktree ")]


def test_add_creates_branch_worktree_and_registration(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    wt = sb.add_agent("backend", "src/backend/**")
    assert wt == sb.root / "repo-backend" and (wt / "src/backend/api.py").is_file()
    assert sb.git("branch", "--show-current", cwd=wt).out.strip() == "fleet/backend"
    assert sb.head("fleet/backend") == sb.head("main")
    # the committed file says nothing of where this clone keeps it; this clone's own config does
    assert registered(sb)["backend"] == {"zone": ["src/backend/**"], "branch": "fleet/backend"}
    assert sb.git("config", "fleet-agent.backend.worktree").out.strip() == str(wt)
    assert str(wt) in worktree_paths(sb)
    # no commit needed: the main worktree's config changed, nothing else
    assert sb.git("status", "--porcelain").out.strip() == "?? .gitfleet.toml"


def test_add_keeps_the_users_comments(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace("[fleet]", "# my own note\n[fleet]"))
    sb.add_agent("backend", "src/backend/**")
    sb.add_agent("web", "src/frontend/**")
    sb.fleet("rm", "backend")
    text = cfg.read_text()
    assert "# my own note" in text and "# More agents than warn_agents" in text
    assert "\n[agents.web]" in text and "\n[agents.backend]" not in text


def test_list_shows_agents_as_text_and_json(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("backend", "src/backend/**", "!**/*.md")
    sb.add_agent("web", "src/frontend/")
    text = sb.fleet("list").out.splitlines()
    assert text[0].split() == ["backend", "fleet/backend", str(sb.root / "repo-backend"), "src/backend/**", "!**/*.md"]
    rows = json.loads(sb.fleet("list", "--json").out)
    assert [r["agent"] for r in rows] == ["backend", "web"]
    assert rows[1] == {"agent": "web", "branch": "fleet/web", "worktree": str(sb.root / "repo-web"),
                       "zone": ["src/frontend/"], "head": sb.head("main"), "state": "ok"}


def test_adopting_an_existing_branch_keeps_it_as_it_is(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.git("switch", "-q", "-c", "feature/api")
    sb.commit(sb.repo, {"src/backend/new.py": "x\n"}, "work in progress")
    tip = sb.head()
    sb.git("switch", "-q", "main")
    wt = sb.add_agent("api", "src/backend/**", extra=("--branch", "feature/api", "--path", "../elsewhere"))
    assert wt != sb.root / "elsewhere"  # --path given: not the default place
    assert sb.head("HEAD", cwd=sb.root / "elsewhere") == tip
    assert "worktree" not in registered(sb)["api"]
    assert sb.git("config", "fleet-agent.api.worktree").out.strip() == str(sb.root / "elsewhere")
    assert json.loads(sb.fleet("list", "--json").out)[0]["worktree"] == str(sb.root / "elsewhere")


def test_default_branch_that_exists_is_not_adopted_silently(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.git("branch", "fleet/backend")
    res = sb.fleet("add", "backend", "--zone", "src/backend/**", ok=False)
    assert res.code == 1
    assert "branch fleet/backend already exists" in res.err and "--branch fleet/backend" in res.err


def test_overlapping_zone_is_refused_naming_agent_and_path(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("backend", "src/backend/**")
    res = sb.fleet("add", "all-src", "--zone", "src/**", ok=False)
    assert res.code == 1
    assert "overlaps the zone of agent 'backend'" in res.err and "src/backend/" in res.err
    assert "--allow-overlap" in res.err
    assert "all-src" not in registered(sb) and "fleet/all-src" not in sb.branches()
    sb.fleet("add", "all-src", "--zone", "src/**", "--allow-overlap")
    assert "all-src" in registered(sb)


def test_overlap_found_through_a_tracked_file(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("docs", "*.md")
    res = sb.fleet("add", "backend", "--zone", "src/backend/", ok=False)
    assert "'docs'" in res.err and "src/backend/README.md" in res.err
    sb.fleet("add", "backend", "--zone", "src/backend/", "--zone", "!*.md")


def test_agent_limits_warn_above_seven_and_refuse_above_ten(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    for i in range(7):
        res = sb.fleet("add", f"a{i}", "--zone", f"area{i}/**")
        assert "agents; beyond" not in res.err  # (areaN/ holds no file yet: that is warned of, not this)
    res = sb.fleet("add", "a7", "--zone", "area7/**")
    assert "warning: this makes 8 agents" in res.err
    sb.fleet("add", "a8", "--zone", "area8/**")
    sb.fleet("add", "a9", "--zone", "area9/**")
    res = sb.fleet("add", "a10", "--zone", "area10/**", ok=False)
    assert res.code == 1 and "limit is 10" in res.err and "--force" in res.err
    assert "a10" not in registered(sb) and not (sb.root / "repo-a10").exists()
    sb.fleet("add", "a10", "--zone", "area10/**", "--force")
    assert len(registered(sb)) == 11


@pytest.mark.parametrize("args, code, words", [
    (["bad name", "--zone", "x/"], 2, "not a valid agent name"),
    (["-x", "--zone", "x/"], 2, "No such option"),
    (["ok", "--zone", "a[b"], 2, "unclosed"),
    (["ok", "--zone", "../up/**"], 2, "not a path inside the repository"),
    (["ok", "--zone", "x/", "--branch", "no..dots"], 2, "not a valid branch name"),
    (["ok", "--zone", "x/", "--branch", "main"], 2, "base branch"),
    (["ok", "--zone", "x/", "--base", "nonexistent"], 1, "base 'nonexistent' does not exist"),
    (["ok"], 2, "Missing option '--zone'"),
    (["ok", "--zone", "x/", "--path", "README.md"], 1, "already exists"),
])
def test_bad_input_is_refused_and_leaves_nothing(fleet_repo: Sandbox, args: list[str], code: int, words: str) -> None:
    sb = fleet_repo
    before = (sb.repo / ".gitfleet.toml").read_text()
    res = sb.fleet("add", *args, ok=False)
    assert res.code == code, str(res)
    assert words in res.err and res.err.startswith("error: ")
    assert "Traceback" not in res.err
    assert (sb.repo / ".gitfleet.toml").read_text() == before
    assert sb.branches() == ["main"]
    assert worktree_paths(sb) == [str(sb.repo)]
    assert not (sb.repo / ".git/worktrees").exists() or not list((sb.repo / ".git/worktrees").iterdir())


def test_failed_worktree_creation_cleans_up_branch_and_worktree(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    blocker = sb.root / "repo-backend"
    blocker.mkdir()
    (blocker / "keep.txt").write_text("mine")
    res = sb.fleet("add", "backend", "--zone", "src/backend/**", ok=False)
    assert "already exists and is not empty" in res.err
    assert (blocker / "keep.txt").read_text() == "mine"
    assert sb.branches() == ["main"]


def test_without_init_there_is_a_clear_error(sandbox: Sandbox) -> None:
    sandbox.make_repo({"a": "1"})
    res = sandbox.fleet("add", "x", "--zone", "a", ok=False)
    assert res.code == 1 and "git fleet-init" in res.err


def test_outside_a_repository_there_is_a_clear_error(sandbox: Sandbox) -> None:
    sandbox.repo.mkdir()
    res = sandbox.fleet("list", ok=False)
    assert res.code == 2 and "not a git repository" in res.err


def test_agents_cannot_add_or_remove_agents(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    wt = sb.add_agent("backend", "src/backend/**")
    res = sb.fleet("add", "other", "--zone", "docs/", cwd=wt, ok=False)
    assert "agent 'backend' cannot add agents" in res.err and str(sb.repo) in res.err
    res = sb.fleet("rm", "backend", cwd=wt / "src", ok=False)
    assert "cannot remove agents" in res.err


# -- rm ----------------------------------------------------------------------------------------------

def test_rm_removes_worktree_registration_and_merged_branch(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    wt = sb.add_agent("backend", "src/backend/**")
    sb.fleet("rm", "backend")
    assert not wt.exists()
    assert "backend" not in registered(sb)
    assert sb.branches() == ["main"]
    assert worktree_paths(sb) == [str(sb.repo)]


@pytest.mark.parametrize("dirt", ["modified", "untracked", "staged"])
def test_rm_refuses_uncommitted_work(fleet_repo: Sandbox, dirt: str) -> None:
    sb = fleet_repo
    wt = sb.add_agent("backend", "src/backend/**")
    if dirt == "modified":
        (wt / "src/backend/api.py").write_text("changed\n")
    elif dirt == "untracked":
        (wt / "src/backend/new file.py").write_text("new\n")
    else:
        (wt / "src/backend/n.py").write_text("n\n")
        sb.git("add", "src/backend/n.py", cwd=wt)
    res = sb.fleet("rm", "backend", ok=False)
    assert res.code == 1 and "uncommitted work" in res.err and "--force" in res.err
    assert wt.is_dir() and "backend" in registered(sb)
    sb.fleet("rm", "backend", "--force")
    assert not wt.exists() and "backend" not in registered(sb)


def test_ignored_files_do_not_block_rm(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.commit(sb.repo, {".gitignore": "*.log\n"}, "ignore logs")
    wt = sb.add_agent("backend", "src/backend/**")
    (wt / "debug.log").write_text("noise")
    sb.fleet("rm", "backend")
    assert not wt.exists()


def test_rm_refuses_unmerged_commits_and_force_keeps_the_branch(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    wt = sb.add_agent("backend", "src/backend/**")
    sb.commit(wt, {"src/backend/api.py": "v2\n"}, "agent work")
    tip = sb.head(cwd=wt)
    res = sb.fleet("rm", "backend", ok=False)
    assert "1 commit(s) that main does not have" in res.err
    res = sb.fleet("rm", "backend", "--force")
    assert "kept branch fleet/backend" in res.err
    assert sb.head("fleet/backend") == tip and not wt.exists()


def test_rm_after_the_worktree_was_deleted_by_hand(fleet_repo: Sandbox) -> None:
    import shutil

    sb = fleet_repo
    wt = sb.add_agent("backend", "src/backend/**")
    shutil.rmtree(wt)
    # git still has its record: moved by hand (with its work) or deleted? rm asks before it forgets
    res = sb.fleet("rm", "backend", ok=False)
    assert "whose directory is gone: moved by hand, with its work, or deleted?" in res.err
    assert "git worktree repair" in res.err and "pass --force" in res.err and "backend" in registered(sb)
    sb.fleet("rm", "--force", "backend")
    assert worktree_paths(sb) == [str(sb.repo)] and "backend" not in registered(sb)


def test_rm_of_an_agent_whose_worktree_was_moved_by_hand_keeps_its_work(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    wt = sb.add_agent("backend", "src/backend/**")
    (wt / "src/backend/wip.py").write_text("work in progress\n")
    moved = sb.root / "moved-backend"
    wt.rename(moved)
    sb.fleet("rm", "backend", ok=False)
    sb.git("worktree", "repair", str(moved))
    res = sb.fleet("rm", "backend", ok=False)  # now it sees the work there
    assert "has uncommitted work in" in res.err and "src/backend/wip.py" in res.err
    assert sb.git("status", "--porcelain", cwd=moved).out == "?? src/backend/wip.py\n"


def test_rm_unknown_agent(fleet_repo: Sandbox) -> None:
    res = fleet_repo.fleet("rm", "ghost", ok=False)
    assert res.code == 2 and "no agent named 'ghost'" in res.err


def test_list_shows_a_worktree_switched_by_hand(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    wt = sb.add_agent("backend", "src/backend/**")
    sb.git("switch", "-q", "-c", "side", cwd=wt)
    assert "[worktree on side]" in sb.fleet("list").out


def test_paths_with_spaces_and_non_ascii(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    wt = sb.add_agent("docs", "docs/", extra=("--path", "../agent dir é"))
    assert Path(wt.parent / "agent dir é").is_dir()
    assert json.loads(sb.fleet("list", "--json").out)[0]["worktree"] == str(sb.root / "agent dir é")
    sb.fleet("rm", "docs")
    assert not (sb.root / "agent dir é").exists()


def test_concurrent_adds_all_land(fleet_repo: Sandbox) -> None:
    """Several `git fleet-add` processes at once: every agent is registered, none is lost."""
    import subprocess

    sb = fleet_repo
    procs = [subprocess.Popen(["git", "fleet-add", f"w{i}", "--zone", f"area{i}/**"], cwd=sb.repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(5)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert sorted(registered(sb)) == [f"w{i}" for i in range(5)]
    assert sorted(sb.branches()) == ["fleet/w0", "fleet/w1", "fleet/w2", "fleet/w3", "fleet/w4", "main"]
    assert not list((sb.repo / ".git").glob("**/*.lock"))
