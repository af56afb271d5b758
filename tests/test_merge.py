"""Checkpoint merges on real repositories: all or nothing, zones re-checked, crash-safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import Sandbox
from helpers import repo_state as state


def test_checkpoint_merge_makes_one_no_ff_merge_per_agent(fleet2: Sandbox) -> None:
    sb = fleet2
    old = sb.head("main")
    backend_tip, web_tip = sb.head("fleet/backend"), sb.head("fleet/web")
    sb.fleet("merge", "--checkpoint", "phase-1")
    parents = sb.git("rev-list", "--parents", "--first-parent", f"{old}..main").out.split("\n")
    second, first = parents[0].split(), parents[1].split()
    assert first[1:] == [old, backend_tip] and second[1:] == [first[0], web_tip]
    assert sb.git("log", "-1", "--format=%s", "main").out.strip() == "Merge fleet/web (agent web, checkpoint phase-1)"
    # the checkpoint is tagged (annotated) and logged
    assert sb.git("cat-file", "-t", "fleet/phase-1").out.strip() == "tag"
    assert sb.head("fleet/phase-1^{commit}") == sb.head("main")
    log = (sb.repo / ".git/fleet/checkpoints.log").read_text().split("\t")
    assert log[1:4] == ["phase-1", "main", old] and log[5:] == ["backend,web", "1\n"]
    # the checked-out base followed, and the orchestrator's uncommitted config edit was kept
    assert (sb.repo / "src/backend/api.py").read_text() == "def api(): return 2\n"
    assert sb.git("status", "--porcelain").out == "?? .gitfleet.toml\n"
    # merged: a second run has nothing new to merge, and says so as -n and fleet-checkpoint do
    assert sb.fleet("merge", "--checkpoint", "phase-1", "-v").err == \
        "checkpoint phase-1 into main: nothing to merge (round 1 is merged)\n"
    assert sb.fleet("merge", "--checkpoint", "phase-1", "-n").out.startswith(
        "checkpoint phase-1 into main: nothing to merge (round 1 is merged)\n")
    assert sb.fleet("checkpoint").out.startswith("phase-1: merged (round 1, tag fleet/phase-1)\n")
    assert sb.head("main") == sb.head("fleet/phase-1^{commit}")


def test_merge_named_agents_and_every_agent(fleet2: Sandbox) -> None:
    sb = fleet2
    sb.fleet("merge", "web")
    assert sb.git("log", "-1", "--format=%s", "main").out.strip() == "Merge fleet/web (agent web)"
    sb.fleet("merge")  # every agent with new commits: backend is left
    assert sb.git("log", "-1", "--format=%s", "main").out.strip() == "Merge fleet/backend (agent backend)"
    res = sb.fleet("merge", "-n")
    assert "nothing to merge" in res.out and res.code == 0
    assert not sb.git("tag").out


def test_conflict_between_agents_changes_nothing(fleet2: Sandbox) -> None:
    sb = fleet2
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('zone = ["src/frontend/**"]', 'zone = ["src/frontend/**", "README.md"]')
                   .replace('zone = ["src/backend/**"]', 'zone = ["src/backend/**", "README.md"]'))
    sb.fleet("zones", "--approve")  # (edited by hand: a merge counts only approved zones)
    sb.commit(sb.root / "repo-backend", {"README.md": "# backend's view\n"}, "readme")
    sb.commit(sb.root / "repo-web", {"README.md": "# web's view\n"}, "readme")
    before = state(sb)
    res = sb.fleet("merge", "--checkpoint", "phase-1", ok=False)
    assert res.code == 1
    assert "checkpoint phase-1 cannot be merged into main; nothing was changed" in res.err
    assert "web: README.md conflicts with agent 'backend'" in res.err
    assert state(sb) == before


def test_conflict_with_the_base(fleet2: Sandbox) -> None:
    sb = fleet2
    sb.commit(sb.repo, {"src/frontend/app.js": "orchestrator's fix\n"}, "fix on main")
    before = state(sb)
    res = sb.fleet("merge", ok=False)
    assert "web: src/frontend/app.js conflicts with main" in res.err
    assert state(sb) == before


def test_a_no_verify_commit_is_caught_by_the_merge(fleet2: Sandbox) -> None:
    sb = fleet2
    sb.commit(sb.root / "repo-web", {"docs/guide.md": "sneaky\n"}, "sneaky", extra=("--no-verify",))
    sneaky = sb.head("fleet/web")
    before = state(sb)
    res = sb.fleet("merge", "--checkpoint", "phase-1", ok=False)
    assert f"web: {sneaky[:12]} changed docs/guide.md outside its zone" in res.err
    assert "git rebase -i" in res.err
    assert state(sb) == before


def test_local_changes_in_the_base_work_tree(fleet2: Sandbox) -> None:
    sb = fleet2
    (sb.repo / "docs/guide.md").write_text("orchestrator's notes\n")  # not touched by the merge: kept
    sb.fleet("merge", "backend")
    assert (sb.repo / "docs/guide.md").read_text() == "orchestrator's notes\n"
    (sb.repo / "src/frontend/app.js").write_text("orchestrator edits a file the merge changes\n")
    before = state(sb)
    res = sb.fleet("merge", "web", ok=False)
    assert "local changes would be overwritten" in res.err and "src/frontend/app.js" in res.err
    assert state(sb) == before


def test_base_not_checked_out_anywhere(fleet2: Sandbox) -> None:
    sb = fleet2
    sb.git("switch", "-q", "-c", "elsewhere")
    sb.fleet("merge", "--checkpoint", "phase-1")
    assert sb.git("rev-list", "--count", "elsewhere..main").out.strip() == "4"
    assert sb.git("status", "--porcelain").out == "?? .gitfleet.toml\n"  # the checkout was not touched
    assert sb.git("branch", "--show-current").out.strip() == "elsewhere"


def test_dry_run_changes_nothing_and_exits_by_outcome(fleet2: Sandbox) -> None:
    sb = fleet2
    before = state(sb)
    res = sb.fleet("merge", "--dry-run", "--checkpoint", "phase-1")
    assert res.out.splitlines() == ["checkpoint phase-1 into main: would succeed",
                                    "  backend  1 commit(s)  clean", "  web      1 commit(s)  clean"]
    data = json.loads(sb.fleet("merge", "-n", "--json", "--checkpoint", "phase-1").out)
    assert data["ok"] and data["new"] and [m["agent"] for m in data["merges"]] == ["backend", "web"]
    assert state(sb) == before
    sb.commit(sb.root / "repo-web", {"README.md": "x\n"}, "out of zone", extra=("--no-verify",))
    before = state(sb)
    res = sb.fleet("merge", "--dry-run", ok=False)
    assert res.code == 1 and "out of zone: README.md" in res.out
    assert state(sb) == before


def test_checkpoint_listing_shows_readiness(fleet2: Sandbox) -> None:
    sb = fleet2
    (sb.root / "repo-web/src/frontend/wip.js").write_text("wip\n")
    out = sb.fleet("checkpoint").out.splitlines()
    assert out == ["phase-1: ready", "  backend  1 ahead", "  web      1 ahead, 1 uncommitted"]
    sb.fleet("merge", "--checkpoint", "phase-1")
    data = json.loads(sb.fleet("checkpoint", "--json").out)
    assert data[0]["state"] == "merged"


@pytest.mark.parametrize("text, words", [
    ('[checkpoints.p]\nagents = ["ghost"]\n', "names 'ghost', which is not an agent"),
    ('[checkpoints.p]\nagents = []\n', "needs agents"),
])
def test_bad_checkpoints_are_reported_with_line(fleet2: Sandbox, text: str, words: str) -> None:
    sb = fleet2
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text() + "\n" + text)
    res = sb.fleet("checkpoint", ok=False)
    assert words in res.err and f"{cfg}:" in res.err


def test_unknown_checkpoint_and_agent(fleet2: Sandbox) -> None:
    assert "no checkpoint named 'nope'" in fleet2.fleet("merge", "--checkpoint", "nope", ok=False).err
    assert "no agent named 'ghost'" in fleet2.fleet("merge", "ghost", ok=False).err
    assert fleet2.fleet("merge", "--checkpoint", "phase-1", "web", ok=False).code == 2


def test_plain_git_merge_of_an_agent_branch_is_zone_checked(fleet2: Sandbox) -> None:
    sb = fleet2
    sb.git("merge", "-q", "--no-ff", "--no-edit", "fleet/backend")  # in zone: fine
    sb.commit(sb.root / "repo-web", {"docs/guide.md": "sneaky\n"}, "sneaky", extra=("--no-verify",))
    res = sb.git("merge", "--no-ff", "--no-edit", "fleet/web", ok=False)
    assert "merge of fleet/web rejected" in res.err and "changed docs/guide.md" in res.err
    sb.git("merge", "--abort")
    # concluded by hand after a conflict, `git commit` runs pre-commit: still checked
    sb.commit(sb.repo, {"docs/guide.md": "orchestrator\n"}, "conflicting edit on main")
    res = sb.git("merge", "--no-ff", "--no-edit", "fleet/web", ok=False)
    assert "CONFLICT" in res.out
    sb.write_files({"docs/guide.md": "resolved\n"})
    sb.git("add", "docs/guide.md")
    res = sb.git("commit", "--no-edit", ok=False)
    assert "merge of fleet/web rejected" in res.err
    sb.git("merge", "--abort")


def test_status_rows_and_conflict_forecast(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    for name in ("a", "b", "c", "d"):
        sb.add_agent(name, f"area-{name}/**", "shared.txt", extra=("--allow-overlap",))
    sb.commit(sb.repo, {"shared.txt": "base\n", "area-d/x": "base\n"}, "shared file")
    sb.git("merge", "-q", "main", cwd=sb.root / "repo-a")
    sb.git("merge", "-q", "main", cwd=sb.root / "repo-b")
    sb.commit(sb.root / "repo-a", {"shared.txt": "a\n", "area-a/f": "a\n"}, "a")
    sb.commit(sb.root / "repo-b", {"shared.txt": "b\n"}, "b")  # conflicts with a
    sb.commit(sb.root / "repo-c", {"area-c/f": "c\n"}, "c")  # clean with everyone
    sb.commit(sb.root / "repo-d", {"area-d/x": "d\n"}, "d")  # forked before main added area-d/x
    (sb.root / "repo-c/README.md").write_text("stray edit\n")
    data = json.loads(sb.fleet("status", "--json").out)
    rows = {r["agent"]: r for r in data["agents"]}
    assert (rows["a"]["ahead"], rows["a"]["behind"]) == (1, 0)
    assert (rows["d"]["ahead"], rows["d"]["behind"]) == (1, 1)
    assert rows["c"]["dirty"] == 1 and rows["c"]["out_of_zone"] == ["README.md"]
    assert isinstance(rows["a"]["last_commit"], int)
    pairs = {tuple(c["agents"]): c["paths"] for c in data["conflicts"]}
    # a and b took main's area-d/x in; d added its own: add/add conflicts with both, and with main
    assert pairs == {("a", "b"): ["shared.txt"], ("d", "main"): ["area-d/x"], ("a", "d"): ["area-d/x"],
                     ("b", "d"): ["area-d/x"]}
    assert data["merge_order"] == ["a", "c"] and data["held_back"] == ["b", "d"]
    text = sb.fleet("status").out
    assert "would conflict if merged now:\n  d and main: area-d/x\n  a and b: shared.txt\n" in text
    assert "merge order: a, c (then b, d, after git fleet-sync)" in text


def test_union_files_are_open_to_every_agent_and_merged_line_by_line(fleet2: Sandbox) -> None:
    sb = fleet2
    sb.commit(sb.repo, {"CHANGELOG.md": "# Changes\n"}, "changelog")
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace("union = []", 'union = ["CHANGELOG.md"]'))
    assert 'union = ["CHANGELOG.md"]' in cfg.read_text()
    sb.fleet("zones", "--approve")
    for name, line in (("backend", "- backend: api v2\n"), ("web", "- web: app v2\n")):
        wt = sb.root / f"repo-{name}"
        sb.git("merge", "-q", "main", cwd=wt)
        sb.commit(wt, {"CHANGELOG.md": "# Changes\n" + line}, f"{name}: changelog")  # not in its zone: allowed
    data = json.loads(sb.fleet("status", "--json").out)
    assert data["conflicts"] == [] and data["merge_order"] == ["backend", "web"]
    sb.fleet("merge", "--checkpoint", "phase-1")
    assert (sb.repo / "CHANGELOG.md").read_text() == "# Changes\n- backend: api v2\n- web: app v2\n"
    assert not (sb.repo / ".gitattributes").exists() and not (sb.repo / ".git/info/attributes").exists()


def _with_test(sb: Sandbox, cmd: str) -> None:
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('agents = ["backend", "web"]\n', f'agents = ["backend", "web"]\ntest = "{cmd}"\n'))


def test_checkpoint_test_passes_and_the_merge_goes_ahead(fleet2: Sandbox) -> None:
    sb = fleet2
    _with_test(sb, 'grep -q \\"return 2\\" src/backend/api.py && test \\"$FLEET_CHECKPOINT\\" = phase-1')
    sb.fleet("merge", "--checkpoint", "phase-1")
    assert sb.git("tag").out.strip() == "fleet/phase-1"
    assert not list((sb.repo / ".git/fleet/scratch").iterdir())
    assert sb.git("worktree", "list").out.count("\n") == 3  # main and the two agents


def test_failing_checkpoint_test_names_the_culprit_and_changes_nothing(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    names = ["a", "b", "c", "d"]
    for n in names:
        sb.add_agent(n, f"{n}/**")
        sb.commit(sb.root / f"repo-{n}", {f"{n}/f": "broken\n" if n == "c" else "ok\n"}, n)
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text() + '\n[checkpoints.train]\nagents = ["a", "b", "c", "d"]\n'
                   'test = "! grep -rq broken --include=f . && echo all good"\n')
    before = state(sb)
    res = sb.fleet("merge", "--checkpoint", "train", ok=False)
    assert "checkpoint train: `! grep -rq broken --include=f . && echo all good` fails on the merged result" in res.err
    assert "the first merge that breaks it: agent 'c' (fleet/c)" in res.err
    assert state(sb) == before
    assert sb.git("worktree", "list").out.count("\n") == 5
    assert not list((sb.repo / ".git/fleet/scratch").iterdir())


def test_sync_merges_the_base_into_agent_branches(fleet2: Sandbox) -> None:
    sb = fleet2
    sb.fleet("merge", "backend")
    web, backend = sb.root / "repo-web", sb.root / "repo-backend"
    web_tip = sb.head("fleet/web")
    res = sb.fleet("sync", "-v")
    assert "web: merged" in res.err and "backend: fast-forwarded" in res.err
    assert sb.git("rev-list", "--parents", "-1", "fleet/web").out.split()[1:] == [web_tip, sb.head("main")]
    assert (web / "src/backend/api.py").read_text() == "def api(): return 2\n"  # the worktree followed
    assert sb.git("status", "--porcelain", cwd=web).out == ""
    assert sb.head("fleet/backend") == sb.head("main")  # nothing of its own: no merge commit
    assert sb.git("status", "--porcelain", cwd=backend).out == ""
    assert "backend: up to date" in sb.fleet("sync", "-v", "backend").err


def test_sync_refuses_dirty_worktrees_and_conflicts_and_syncs_the_rest(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    for n in ("a", "b", "c"):
        sb.add_agent(n, f"{n}/**", "shared.txt", extra=("--allow-overlap",))
    sb.commit(sb.repo, {"shared.txt": "main's\n"}, "main moves on")
    (sb.root / "repo-a/a.txt").write_text("uncommitted\n")
    sb.commit(sb.root / "repo-b", {"shared.txt": "b's\n"}, "b conflicts with main")
    before = {n: sb.head(f"fleet/{n}") for n in ("a", "b")}
    res = sb.fleet("sync", ok=False)
    assert res.code == 1
    assert "error: a: not synced: uncommitted work in a.txt" in res.err
    assert "error: b: not synced: merging main would conflict in shared.txt" in res.err
    assert {n: sb.head(f"fleet/{n}") for n in ("a", "b")} == before
    assert not (sb.repo / ".git/worktrees/repo-b/MERGE_HEAD").exists()
    assert sb.git("status", "--porcelain", cwd=sb.root / "repo-b").out == ""
    assert sb.head("fleet/c") == sb.head("main")  # c was behind and clean: fast-forward merge made
    assert (sb.root / "repo-c/shared.txt").read_text() == "main's\n"


def test_sync_by_rebase_where_the_branch_is_not_shared(fleet2: Sandbox) -> None:
    sb = fleet2
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('sync = "merge"', 'sync = "rebase"'))
    sb.fleet("merge", "backend")
    web_subject = sb.git("log", "-1", "--format=%s", "fleet/web").out
    sb.fleet("sync", "web")
    assert sb.git("rev-list", "--merges", "main..fleet/web").out == ""  # linear
    assert sb.head("fleet/web~1") == sb.head("main")
    assert sb.git("log", "-1", "--format=%s", "fleet/web").out == web_subject
    # a published branch is merged, never rebased
    remote = sb.root / "remote.git"
    sb.git("init", "-q", "--bare", str(remote))
    sb.git("remote", "add", "origin", str(remote))
    sb.commit(sb.root / "repo-backend", {"src/backend/more.py": "more\n"}, "backend goes on")
    sb.git("push", "-q", "origin", "main", "fleet/backend")
    sb.commit(sb.repo, {"README.md": "# moved on\n"}, "main moves on")
    res = sb.fleet("sync", "-v", "backend")
    assert "published" in res.err
    assert sb.git("rev-list", "--merges", "-1", "fleet/backend").out.strip() == sb.head("fleet/backend")


def test_a_rebasing_sync_that_conflicts_leaves_no_worktree_mid_rebase(fleet2: Sandbox) -> None:
    """The rebase runs in a scratch worktree of its own, so a conflict (and a failed abort there)
    can never leave the agent's worktree half rebased: the refusal names the path, the branch
    and its worktree are as they were."""
    sb = fleet2
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('sync = "merge"', 'sync = "rebase"'))
    sb.commit(sb.repo, {"src/frontend/app.js": "app('main')\n"}, "main changes the app too")
    tip = sb.head("fleet/web")
    res = sb.run(["git", "fleet-sync", "web"], ok=False)
    assert res.code == 1 and "src/frontend/app.js" in res.err and "Traceback" not in res.err, res
    web = sb.root / "repo-web"
    git_dir = Path(sb.git("rev-parse", "--absolute-git-dir", cwd=web).out.strip())
    assert not (git_dir / "rebase-merge").exists() and not (git_dir / "rebase-apply").exists()
    assert sb.head("fleet/web") == tip and sb.git("status", "--porcelain", cwd=web).out == ""
    assert sb.git("worktree", "list", "--porcelain").out.count("worktree ") == 3  # no scratch worktree left


def test_a_checkpoint_is_merged_round_after_round(fleet2: Sandbox) -> None:
    """Through the installed commands. The practice merges at every natural breakpoint: the same declared checkpoint, again, each
    round tagged and logged; merge -n, the real merge and fleet-checkpoint say the same thing."""
    sb = fleet2
    sb.run(["git", "fleet-merge", "--checkpoint", "phase-1"])
    sb.fleet("sync")
    sb.commit(sb.root / "repo-web", {"src/frontend/app.js": "app(3)\n"}, "web: app v3")
    assert sb.run(["git", "fleet-checkpoint"]).out.splitlines()[0] == "phase-1: ready (round 2)"
    assert sb.run(["git", "fleet-merge", "-n", "--checkpoint", "phase-1"]).out.splitlines()[0] == \
        "checkpoint phase-1 into main: would succeed (round 2)"
    res = sb.run(["git", "fleet-merge", "--checkpoint", "phase-1", "-v"])
    assert res.err.splitlines() == ["merged fleet/web (1 commit(s)) into main",
                                    "tagged fleet/phase-1@2: checkpoint phase-1, round 2"]
    assert sb.head("fleet/phase-1@2^{commit}") == sb.head("main") != sb.head("fleet/phase-1^{commit}")
    assert "round 2" in sb.git("cat-file", "tag", "fleet/phase-1@2").out
    rounds = [line.split("\t") for line in (sb.repo / ".git/fleet/checkpoints.log").read_text().splitlines()]
    assert [(r[1], r[5], r[6]) for r in rounds] == [("phase-1", "backend,web", "1"), ("phase-1", "web", "2")]
    row = json.loads(sb.run(["git", "fleet-checkpoint", "--json"]).out)[0]
    assert (row["state"], row["rounds"], row["tag"]) == ("merged", 2, "fleet/phase-1@2")
    sb.git("tag", "fleet/phase-1@\u00b2", "main")  # a tag made by hand, not a round: passed over
    sb.git("tag", "fleet/phase-10", "main")
    assert json.loads(sb.run(["git", "fleet-checkpoint", "--json"]).out)[0]["rounds"] == 2
    # a conflict coming: all three say "would fail", none says "merged"
    sb.fleet("sync")
    sb.commit(sb.root / "repo-web", {"src/frontend/app.js": "app(4)\n"}, "web: app v4")
    sb.commit(sb.repo, {"src/frontend/app.js": "app(main)\n"}, "main edits web's file")
    assert sb.run(["git", "fleet-checkpoint"]).out.splitlines()[0] == "phase-1: blocked"
    assert sb.run(["git", "fleet-merge", "-n", "--checkpoint", "phase-1"], ok=False).out.splitlines()[0] == \
        "checkpoint phase-1 into main: would fail"
    res = sb.run(["git", "fleet-merge", "--checkpoint", "phase-1"], ok=False)
    assert "checkpoint phase-1 cannot be merged into main" in res.err and "src/frontend/app.js" in res.err
    # another checkpoint named like a round of this one cannot be: names have no '@'
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text() + '\n[checkpoints."phase-1@3"]\nagents = ["web"]\n')
    assert "is not a valid checkpoint name" in sb.run(["git", "fleet-checkpoint"], ok=False).err
