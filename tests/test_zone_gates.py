"""Zones hold at every gate against an agent that tries: each route is real history made with
real git (plumbing where an agent would use it), run through the real gates: the pre-push hook,
a server's pre-receive hook, `git fleet-check --commits` and `git fleet-merge`."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import Sandbox, git_daemon


@pytest.fixture
def gates(fleet_repo: Sandbox) -> Sandbox:
    """A fleet whose configuration is committed on main (after a first README), two agents, and a
    bare server with the pre-receive check that the main worktree and agents push to."""
    sb = fleet_repo
    sb.add_agent("web", "src/frontend/**")
    sb.add_agent("backend", "src/backend/**")
    sb.git("add", ".gitfleet.toml")
    sb.commit(sb.repo, {"README.md": "# project, v2\n"}, "fleet config, README v2")
    sb.fleet("sync")
    server = sb.root / "server.git"
    sb.git("clone", "-q", "--bare", str(sb.repo), str(server))
    sb.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "orchestrator", "-f", str(sb.root / "orchestrator")])
    sb.run(["git", "fleet-init", "--server", "--orchestrator-key", str(sb.root / "orchestrator.pub")], cwd=server)
    sb.git("remote", "add", "origin", str(server))
    sb.git("push", "-q", "origin", "fleet/backend", "fleet/web")
    return sb


def backend(sb: Sandbox) -> Path:
    return sb.root / "repo-backend"


def signed(sb: Sandbox, key: str = "orchestrator") -> tuple[str, ...]:
    """git's options for a push signed with a key made in the sandbox (git push --signed)."""
    return ("-c", "gpg.format=ssh", "-c", f"user.signingKey={sb.root / key}")


def push_base(sb: Sandbox) -> None:
    """The orchestrator pushes the base: signed, as the server (given its key) requires."""
    sb.git(*signed(sb), "push", "-q", "--signed", "origin", "main")


def refused_everywhere(sb: Sandbox, *paths: str) -> None:
    """fleet/backend holds something out of its zone: every gate says so, naming each path, and
    nothing moves (the server's branch, main)."""
    wt, tip, main = backend(sb), sb.head("fleet/backend"), sb.head("main")
    on_server = sb.git("ls-remote", "origin", "refs/heads/fleet/backend").out
    res = sb.git("push", "origin", "fleet/backend", cwd=wt, ok=False)  # the local pre-push hook
    assert "push of fleet/backend rejected" in res.err and all(p in res.err for p in paths), res.err
    res = sb.git("push", "--no-verify", "origin", "fleet/backend", cwd=wt, ok=False)  # the server's
    assert "remote: error: push of fleet/backend rejected" in res.err and all(p in res.err for p in paths), res.err
    assert sb.git("ls-remote", "origin", "refs/heads/fleet/backend").out == on_server
    res = sb.run(["git-fleet-check", "--commits", "backend"], ok=False)
    assert res.code == 1 and all(p in res.err for p in paths), res.err
    res = sb.fleet("merge", "backend", ok=False)
    assert "cannot be merged into main" in res.err and all(p in res.err for p in paths), res.err
    assert sb.head("main") == main and sb.head("fleet/backend") == tip


def test_an_evil_merge_is_judged_by_what_it_changes(gates: Sandbox) -> None:
    """A merge whose second parent is an old commit of the base, and whose tree takes that
    commit's README and drops .gitfleet.toml: each parent explains part of it, so `git log --cc`
    showed nothing; re-made as git would make it, the merge changes both paths."""
    sb, wt = gates, backend(gates)
    sb.commit(wt, {"src/backend/api.py": "v2\n"}, "in zone")
    old = sb.head("main~1")  # the first commit: README v1, no fleet config
    sb.git("rm", "-q", "--cached", ".gitfleet.toml", cwd=wt)
    sb.git("show", f"{old}:README.md", cwd=wt)
    blob = sb.git("rev-parse", f"{old}:README.md", cwd=wt).out.strip()
    sb.git("update-index", "--cacheinfo", f"100644,{blob},README.md", cwd=wt)
    tree = sb.git("write-tree", cwd=wt).out.strip()
    evil = sb.git("commit-tree", tree, "-p", "HEAD", "-p", old, "-m", "merge", cwd=wt).out.strip()
    sb.git("reset", "-q", "--hard", evil, cwd=wt)
    refused_everywhere(sb, "README.md", ".gitfleet.toml")


def test_a_real_merge_of_the_base_passes_every_gate(gates: Sandbox) -> None:
    """The same shape done honestly (the base merged into an agent's branch, a conflict in its
    own zone resolved by hand) is no one's out-of-zone change."""
    sb, wt = gates, backend(gates)
    sb.commit(wt, {"src/backend/api.py": "agent\n"}, "agent's api")
    sb.commit(sb.repo, {"src/backend/api.py": "orchestrator\n", "docs/guide.md": "new guide\n"}, "on main")
    push_base(sb)  # the server takes the base's commits from its own base
    sb.git("merge", "-q", "main", cwd=wt, ok=False)  # conflicts in api.py
    sb.write_files({"src/backend/api.py": "both\n"}, wt)
    sb.git("commit", "-qam", "merge main", cwd=wt)
    sb.git("push", "-q", "origin", "fleet/backend", cwd=wt)
    assert sb.run(["git-fleet-check", "--commits", "backend"]).code == 0
    sb.fleet("merge", "backend")
    assert (sb.repo / "src/backend/api.py").read_text() == "both\n"


def test_an_orphan_root_commit_is_read_whatever_log_showroot_says(gates: Sandbox) -> None:
    """With log.showRoot false a root commit shows no paths; merged into an agent's branch, its
    files came through every gate."""
    sb, wt = gates, backend(gates)
    sb.git("config", "log.showRoot", "false")
    tree = sb.git("mktree", cwd=wt, input="").out.strip()
    blob = sb.git("hash-object", "-w", "--stdin", cwd=wt, input="evil\n").out.strip()
    tree = sb.git("mktree", cwd=wt, input=f"100644 blob {blob}\tevil.js\n").out.strip()
    tree = sb.git("mktree", cwd=wt, input=f"040000 tree {tree}\tfrontend\n").out.strip()
    tree = sb.git("mktree", cwd=wt, input=f"040000 tree {tree}\tsrc\n").out.strip()
    root = sb.git("commit-tree", tree, "-m", "root", cwd=wt).out.strip()
    sb.git("merge", "-q", "--no-verify", "--allow-unrelated-histories", "-m", "m", root, cwd=wt)
    refused_everywhere(sb, "src/frontend/evil.js")


def test_a_gitlink_is_read_whatever_diff_ignoresubmodules_says(gates: Sandbox) -> None:
    sb, wt = gates, backend(gates)
    commit = sb.head("main")
    sb.git("update-index", "--add", "--cacheinfo", f"160000,{commit},src/frontend/lib", cwd=wt)
    sb.git("commit", "-q", "--no-verify", "-m", "gitlink", cwd=wt)
    sb.git("config", "diff.ignoreSubmodules", "all")
    refused_everywhere(sb, "src/frontend/lib")


def test_a_tree_path_through_dot_dot_is_no_path_in_a_zone(gates: Sandbox) -> None:
    """`src/backend/../../README.md`, made with mktree, starts with the zone's directory; git
    cannot check it out, and no gate takes it for a path below src/backend."""
    sb, wt = gates, backend(gates)
    tree = sb.git("mktree", cwd=wt, input=f"100644 blob {sb.head('main:README.md')}\tREADME.md\n").out.strip()
    for name in ("..", "..", "backend", "src"):
        tree = sb.git("mktree", cwd=wt, input=f"040000 tree {tree}\t{name}\n").out.strip()
    top = sb.git("ls-tree", "HEAD", cwd=wt).out.replace("\tsrc\n", "\tsrc-old\n")
    whole = sb.git("mktree", cwd=wt, input=top + f"040000 tree {tree}\tsrc\n").out.strip()
    bad = sb.git("commit-tree", whole, "-p", "HEAD", "-m", "dot dot", cwd=wt).out.strip()
    sb.git("update-ref", "refs/heads/fleet/backend", bad, cwd=wt)
    # (git's own fsck on the server refuses it first, when on: test_the_server_refuses_a_tree_...)
    sb.git("config", "receive.fsckObjects", "false", cwd=sb.root / "server.git")
    refused_everywhere(sb, "src/backend/../../README.md")
    res = sb.run(["git-fleet-check", "--commits", "backend"], ok=False)
    assert "not a path git can check out" in res.err


@pytest.mark.parametrize("scratch", ["refs/heads/scratch", "refs/tags/v0", "refs/fleet/teleport/backend"])
def test_a_commit_parked_under_another_ref_is_still_checked_on_the_server(gates: Sandbox, scratch: str) -> None:
    """pre-receive left out whatever any ref of the server had: a commit pushed first to any
    other ref was then taken on an agent's branch unchecked."""
    sb, wt = gates, backend(gates)
    sb.commit(wt, {"src/frontend/app.js": "mine\n"}, "cross the line", extra=("--no-verify",))
    sb.git("push", "-q", "--no-verify", "origin", f"HEAD:{scratch}", cwd=wt)
    res = sb.git("push", "--no-verify", "origin", "fleet/backend", cwd=wt, ok=False)
    assert "push of fleet/backend rejected" in res.err and "src/frontend/app.js" in res.err
    # and the local pre-push hook no longer takes what the remote has under any name for checked
    res = sb.git("push", "origin", "fleet/backend", cwd=wt, ok=False)
    assert "src/frontend/app.js" in res.err and "remote:" not in res.err


def test_the_worktree_decides_whose_zone_not_the_branch(gates: Sandbox) -> None:
    """backend's worktree with web's branch checked out is still backend: web's zone is not its."""
    sb, wt = gates, backend(gates)
    sb.git("checkout", "-q", "--ignore-other-worktrees", "fleet/web", cwd=wt)
    res = sb.commit(wt, {"src/frontend/app.js": "web's file\n"}, "as web", ok=False)
    assert "agent 'backend' changed 1 path(s) outside its zone" in res.err
    sb.git("reset", "-q", "--hard", cwd=wt)
    sb.commit(wt, {"src/backend/api.py": "mine\n"}, "mine, on web's branch")


def test_merging_the_base_into_an_agent_branch_blames_no_agent(gates: Sandbox) -> None:
    """web's branch points at main (synced); backend merges main, which holds the orchestrator's
    own commit: that is no agent's change, not web's, and the merge goes through."""
    sb, wt = gates, backend(gates)
    sb.commit(wt, {"src/backend/api.py": "v2\n"}, "in zone")
    sb.commit(sb.repo, {"docs/guide.md": "orchestrator\n"}, "orchestrator's")
    sb.fleet("sync", "web")
    assert sb.head("fleet/web") == sb.head("main")
    sb.git("merge", "-q", "-m", "merge main", "main", cwd=wt)
    assert sb.head("HEAD^2", cwd=wt) == sb.head("main")
    assert not (sb.repo / ".git/worktrees/repo-backend/MERGE_HEAD").exists()


# -- who may change the fleet ------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["merge", "backend"], ["sync"], ["set", "backend", "--zone", "**"], ["down", "--yes"],
                                     ["up", "--detach"], ["run", "web", "--", "true"], ["prune", "--yes"],
                                     ["init", "--uninstall"], ["doctor", "--fix"], ["teleport", "push", "web"]])
def test_an_agent_cannot_run_the_orchestrators_commands(gates: Sandbox, command: list[str]) -> None:
    """From its worktree, or from the main worktree in the session the fleet gave it (FLEET_AGENT),
    an agent is refused whatever changes the fleet or the base, with one message."""
    sb, wt = gates, backend(gates)
    sb.commit(wt, {"src/backend/api.py": "v2\n"}, "in zone")
    before = (sb.git("for-each-ref").out, (sb.repo / ".gitfleet.toml").read_text(),
              sorted(p.name for p in (sb.repo / ".git/hooks").iterdir()))
    for where, env in ((wt, {}), (sb.repo, {"FLEET_AGENT": "backend"})):
        res = sb.run(["git", f"fleet-{command[0]}", *command[1:]], cwd=where, env=env, ok=False)
        assert res.code == 1 and "error: agent 'backend' cannot" in res.err, res
        assert "only the orchestrator changes the fleet or the base" in res.err and "an agent may run" in res.err
    assert before == (sb.git("for-each-ref").out, (sb.repo / ".gitfleet.toml").read_text(),
                      sorted(p.name for p in (sb.repo / ".git/hooks").iterdir()))


def test_an_agent_may_look_and_use_the_bus(gates: Sandbox) -> None:
    sb, wt = gates, backend(gates)
    for command in (["status"], ["list"], ["who", "src/backend/api.py"], ["zones"], ["checkpoint"], ["merge", "-n"],
                    ["task", "list"], ["check", "--commits"], ["prune", "-n"]):
        sb.run(["git", f"fleet-{command[0]}", *command[1:]], cwd=wt)
    sb.run(["git", "fleet-teleport", "push", "backend"], cwd=wt, env={"FLEET_AGENT": "backend"})


def test_a_plain_git_merge_into_the_base_is_checked_even_where_it_could_fast_forward(gates: Sandbox) -> None:
    """A fast-forward runs no merge hook: git fleet-init makes merges into the base real merges,
    so the pre-merge-commit hook holds an agent's commits to its zone."""
    sb, wt = gates, backend(gates)
    assert sb.git("config", "branch.main.mergeOptions").out.strip() == "--no-ff"
    sb.commit(wt, {"docs/guide.md": "sneaky\n"}, "sneaky", extra=("--no-verify",))
    main = sb.head("main")
    res = sb.git("merge", "fleet/backend", ok=False)
    assert "merge of fleet/backend rejected" in res.err and "docs/guide.md" in res.err
    assert sb.head("main") == main
    sb.git("merge", "--abort")
    sb.git("reset", "-q", "--hard", "HEAD~1", cwd=wt)
    sb.commit(wt, {"src/backend/api.py": "v2\n"}, "fine")
    sb.git("merge", "-q", "--no-edit", "fleet/backend")
    assert sb.head("main^2") == sb.head("fleet/backend")


# -- the server ------------------------------------------------------------------------------------

def test_the_server_keeps_the_base_and_agent_branches_moving_forward(gates: Sandbox) -> None:
    """Without telling pushers apart, the server still refuses deleting or force-pushing the base
    and any agent's branch; other branches are the pushers' own."""
    sb, wt = gates, backend(gates)
    sb.commit(wt, {"src/backend/api.py": "v2\n"}, "in zone")
    sb.git("push", "-q", "origin", "fleet/backend", cwd=wt)
    on_server = sb.git("ls-remote", "origin").out
    res = sb.git("push", "--no-verify", "origin", "--delete", "fleet/web", cwd=wt, ok=False)
    assert "remote: error: deleting fleet/web rejected: it is an agent's branch" in res.err
    res = sb.git("push", "--no-verify", "--force", "origin", "HEAD~1:fleet/backend", cwd=wt, ok=False)
    assert "force-push of fleet/backend rejected" in res.err and "git pull" in res.err
    res = sb.git("push", "--no-verify", "--force", "origin", "main~1:main", ok=False)
    assert "force-push of main rejected: it is the base" in res.err
    res = sb.git("push", "--no-verify", "origin", "--delete", "main", ok=False)
    assert "deleting main rejected" in res.err
    assert sb.git("ls-remote", "origin").out == on_server
    sb.git("push", "-q", "origin", "HEAD:scratch", cwd=wt)
    sb.git("push", "-q", "--force", "origin", "HEAD~1:scratch", cwd=wt)
    sb.git("push", "-q", "origin", "--delete", "scratch", cwd=wt)


def test_a_server_without_the_fleets_config_says_so(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.make_repo({"README.md": "x\n"})
    server = sb.root / "server.git"
    sb.git("clone", "-q", "--bare", str(sb.repo), str(server))
    res = sb.run(["git", "fleet-init", "--server"], cwd=server)
    base = sb.git("symbolic-ref", "--short", "HEAD").out.strip()
    assert f"warning: {base}:.gitfleet.toml is not here yet: until it is pushed, pushes are not zone-checked" in res.err
    assert sb.git("config", "receive.fsckObjects", cwd=server).out.strip() == "true"
    sb.commit(sb.repo, {"a": "1\n"}, "more")
    res = sb.git("push", "-q", str(server), "HEAD")
    assert ".gitfleet.toml is not on this server: zones are not checked here" in res.err
    assert "fatal" not in res.err


def test_the_server_refuses_a_tree_git_cannot_check_out(gates: Sandbox) -> None:
    """receive.fsckObjects, set by init --server, refuses a `..` entry in any pushed tree."""
    sb, wt = gates, backend(gates)
    blob = sb.git("hash-object", "-w", "--stdin", cwd=wt, input="x\n").out.strip()
    tree = sb.git("mktree", cwd=wt, input=f"100644 blob {blob}\tx\n").out.strip()
    tree = sb.git("mktree", cwd=wt, input=f"040000 tree {tree}\t..\n").out.strip()
    bad = sb.git("commit-tree", tree, "-p", "HEAD", "-m", "dot dot", cwd=wt).out.strip()
    res = sb.git("push", "--no-verify", "origin", f"{bad}:refs/heads/scratch", cwd=wt, ok=False)
    assert "hasDotdot: contains '..'" in res.err
    assert sb.git("ls-remote", "origin", "refs/heads/scratch", cwd=wt).out == ""


# -- the matcher's edges -----------------------------------------------------------------------------

def test_one_case_rule_for_the_whole_fleet(gates: Sandbox) -> None:
    """With ignore_case = true (version 3), src/WEB/app.js is web's at every gate, whatever this
    clone's core.ignoreCase says; without it, doctor warns in a clone that folds case."""
    sb, wt = gates, backend(gates)
    sb.git("config", "core.ignoreCase", "true")
    res = sb.fleet("doctor", ok=False)
    assert "FAIL  zones" in res.out and "this clone ignores case (core.ignoreCase), the fleet's zones do not" in res.out
    sb.fleet("set", "backend", "--zone", "src/**", "--zone", "!src/frontend/**", "--allow-overlap")
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace("[fleet]\n", "[fleet]\nignore_case = true\n", 1))
    sb.fleet("zones", "--approve")
    sb.git("config", "core.ignoreCase", "false")
    res = sb.commit(wt, {"src/FRONTEND/app.js": "mine\n"}, "case", ok=False)
    assert 'agent \'backend\' changed 1 path(s)' in res.err and "src/FRONTEND/app.js" in res.err
    sb.commit(wt, {"src/FRONTEND/app.js": "mine\n"}, "case", extra=("--no-verify",))
    sb.git("add", ".gitfleet.toml")
    sb.git("commit", "-qm", "ignore case")
    push_base(sb)
    res = sb.git("push", "--no-verify", "origin", "fleet/backend", cwd=wt, ok=False)
    assert "remote: error:   " in res.err and "src/FRONTEND/app.js" in res.err
    res = sb.fleet("merge", "backend", ok=False)
    assert "changed src/FRONTEND/app.js outside its zone" in res.err


def test_a_key_of_a_newer_version_names_the_version_it_needs(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace("version = 4\n", "version = 2\n")
                   .replace("[fleet]\n", "[fleet]\nignore_case = true\n"))
    res = sb.fleet("list", ok=False)
    assert res.code == 2 and "'fleet.ignore_case' needs `version = 3` at the top of .gitfleet.toml (it says 2)" in res.err


def test_paths_in_messages_are_quoted_as_git_status_quotes_them(gates: Sandbox) -> None:
    sb, wt = gates, backend(gates)
    res = sb.commit(wt, {"docs/guide.md ": "trailing space\n"}, "space", ok=False)
    assert 'added "docs/guide.md "  (owned by no agent' in res.err


# -- the configuration itself ------------------------------------------------------------------------

def test_a_zone_widened_by_hand_is_not_counted_by_the_merge(gates: Sandbox) -> None:
    """An agent edits the orchestrator's .gitfleet.toml (hidden from git status with
    --skip-worktree) to own docs/ too: the merge shows the change and refuses it until the person
    approves; a widening that makes zones overlap is refused as git fleet-add refuses one."""
    sb, wt = gates, backend(gates)
    sb.commit(wt, {"docs/guide.md": "by backend\n"}, "docs", extra=("--no-verify",))
    cfg = sb.repo / ".gitfleet.toml"
    sb.git("-C", str(sb.repo), "update-index", "--skip-worktree", ".gitfleet.toml", cwd=wt)
    cfg.write_text(cfg.read_text().replace('zone = ["src/backend/**"]', 'zone = ["src/backend/**", "docs/**"]'))
    assert sb.git("status", "--porcelain").out == ""
    main = sb.head("main")
    res = sb.fleet("merge", "backend", ok=False)
    assert "were changed by no fleet command and are not approved, so the merge counts only approved zones" in res.err
    assert "agent 'backend': zone src/backend/** -> src/backend/**  docs/**" in res.err
    assert "git fleet-zones --approve" in res.err and sb.head("main") == main
    res = sb.git("merge", "--no-edit", "fleet/backend", ok=False)  # nor does the merge hook count them
    assert "are not approved, so they are not what this is checked against" in res.err and sb.head("main") == main
    sb.git("merge", "--abort", ok=None)
    res = sb.fleet("merge", "-n", "backend", ok=False)  # nor a dry run
    assert "are not approved" in res.err
    approved = sb.repo / ".git/fleet/approved.toml"
    kept = approved.read_text()
    approved.unlink()  # without the record, the base's committed file is the approved one
    assert "are not approved" in sb.fleet("merge", "backend", ok=False).err
    approved.write_text(kept)
    res = sb.fleet("add", "docs", "--zone", "/README.md", ok=False)  # nothing is written on top of it either
    assert "nothing is written on top of them" in res.err and "docs" not in sb.fleet("list").out.split()
    assert "fleet/docs" not in sb.branches() and not (sb.root / "repo-docs").exists()
    res = sb.run(["git", "fleet-zones", "--approve"], cwd=wt, ok=False)
    assert "agent 'backend' cannot approve zones" in res.err
    res = sb.fleet("zones", "--approve")
    assert "agent 'backend': zone src/backend/** -> src/backend/**  docs/**" in res.err
    sb.fleet("merge", "backend")
    assert sb.head("main^2") == sb.head("fleet/backend")


def test_a_widening_that_overlaps_another_zone_is_refused_at_merge(gates: Sandbox) -> None:
    sb, wt = gates, backend(gates)
    sb.commit(wt, {"src/frontend/app.js": "by backend\n"}, "web's file", extra=("--no-verify",))
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('zone = ["src/backend/**"]', 'zone = ["src/**"]'))
    res = sb.fleet("merge", "backend", ok=False)
    assert "new overlap: backend and web both own src/frontend/" in res.err


def test_zones_a_fleet_command_wrote_need_no_approval(gates: Sandbox) -> None:
    sb, wt = gates, backend(gates)
    sb.fleet("set", "backend", "--zone", "src/backend/**", "--zone", "docs/**")
    sb.commit(wt, {"docs/guide.md": "by backend\n"}, "docs")
    sb.fleet("merge", "backend")


def test_with_an_orchestrator_key_only_its_signed_pushes_move_the_base(gates: Sandbox) -> None:
    """An agent pushing to the server's main directly (a widened .gitfleet.toml, which the server
    would then enforce) is refused; the orchestrator's push, signed with its key, is taken, and
    a push signed with any other key is not the orchestrator's."""
    sb, wt = gates, backend(gates)
    cfg = sb.repo / ".gitfleet.toml"
    sb.git("checkout", "-q", "--ignore-other-worktrees", "-b", "widen", "main", cwd=wt)
    sb.write_files({".gitfleet.toml": cfg.read_text().replace('"src/backend/**"', '"**"')}, wt)
    sb.git("commit", "-qam", "widen", "--no-verify", cwd=wt)
    on_server = sb.git("ls-remote", "origin", "main").out
    res = sb.git("push", "--no-verify", "origin", "HEAD:main", cwd=wt, ok=False)
    assert "push of main rejected: only the orchestrator's signed pushes move it here" in res.err
    sb.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sb.root / "agent")])
    res = sb.git(*signed(sb, "agent"), "push", "--signed", "--no-verify", "origin", "HEAD:main", cwd=wt, ok=False)
    assert "only the orchestrator's signed pushes move it here" in res.err
    assert sb.git("ls-remote", "origin", "main").out == on_server
    sb.commit(sb.repo, {"docs/guide.md": "the orchestrator's\n"}, "orchestrator")
    push_base(sb)
    assert sb.git("ls-remote", "origin", "main").out.split()[0] == sb.head("main")


def test_without_keys_the_base_moves_only_by_merges_held_to_zones(gates: Sandbox) -> None:
    """fleet.basePush = merges: a checkpoint merge of an agent's branch is taken; a commit of its
    own on main, or a merge that says it is backend's and brings web's path, is not."""
    sb, wt = gates, backend(gates)
    server = sb.root / "server.git"
    sb.git("config", "fleet.basePush", "merges", cwd=server)
    sb.commit(wt, {"src/backend/api.py": "v2\n"}, "in zone")
    sb.fleet("merge", "backend")
    sb.git("push", "-q", "--no-verify", "origin", "main")  # unsigned: a merge of backend's branch
    assert sb.git("ls-remote", "origin", "main").out.split()[0] == sb.head("main")
    sb.commit(sb.repo, {".gitfleet.toml": "version = 3\n"}, "drop the fleet")
    res = sb.git("push", "--no-verify", "origin", "main", ok=False)
    assert "(drop the fleet) is not a merge of an agent's branch" in res.err
    sb.git("reset", "-q", "--hard", "HEAD~1")
    sb.commit(wt, {"src/frontend/app.js": "backend's\n"}, "web's file", extra=("--no-verify",))
    tip = sb.head("fleet/backend")
    forged = sb.git("commit-tree", sb.head("fleet/backend^{tree}"), "-p", "main", "-p", tip, "-m",
                    "Merge fleet/backend (agent backend)").out.strip()
    res = sb.git("push", "--no-verify", "origin", f"{forged}:refs/heads/main", ok=False)
    assert "merges fleet/backend" in res.err and "src/frontend/app.js" in res.err


def test_with_an_agents_key_only_it_pushes_its_branch(gates: Sandbox) -> None:
    sb, wt = gates, backend(gates)
    server = sb.root / "server.git"
    sb.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sb.root / "backend-key")])
    res = sb.run(["git", "fleet-init", "--server", "--agent-key", f"backend={sb.root / 'backend-key.pub'}"], cwd=server)
    assert "the base moves only by the orchestrator's signed pushes" in res.err
    sb.commit(wt, {"src/backend/api.py": "v2\n"}, "in zone")
    res = sb.git("push", "origin", "fleet/backend", cwd=wt, ok=False)
    assert "must be signed with agent 'backend''s key" in res.err
    sb.git(*signed(sb, "backend-key"), "push", "-q", "--signed", "origin", "fleet/backend", cwd=wt)
    res = sb.run(["git", "fleet-init", "--server", "--agent-key", "backend"], cwd=server, ok=False)
    assert res.code == 2 and "give AGENT=FILE" in res.err
    res = sb.run(["git", "fleet-init", "--server", "--orchestrator-key", str(sb.root / "backend-key")], cwd=server,
                 ok=False)
    assert res.code == 2 and "is not an SSH public key" in res.err


def test_a_rewritten_zone_cache_does_not_fool_a_push_or_a_merge(gates: Sandbox) -> None:
    """The commit hook reads the compiled zones from a cache an agent can write; pre-push,
    pre-merge-commit and the merge compile them from the configuration."""
    import marshal

    sb, wt = gates, backend(gates)
    cache = sb.repo / ".git/fleet/zones.cache"
    sb.fleet("list")
    data = marshal.loads(cache.read_bytes())
    data["agents"]["backend"]["rules"] = [["re", ".*", True]]
    cache.write_bytes(marshal.dumps(data))
    sb.commit(wt, {"docs/guide.md": "by backend\n"}, "sneaky")  # the hook is fooled: feedback only
    res = sb.git("push", "origin", "fleet/backend", cwd=wt, ok=False)
    assert "remote:" not in res.err and "push of fleet/backend rejected" in res.err and "docs/guide.md" in res.err
    res = sb.git("merge", "fleet/backend", ok=False)
    assert "merge of fleet/backend rejected" in res.err
    sb.git("merge", "--abort")
    assert "docs/guide.md" in sb.fleet("merge", "backend", ok=False).err


# -- replacement objects, names and moves -----------------------------------------------------------

def twin(sb: Sandbox, commit: str, files: dict[str, str], cwd: Path) -> str:
    """A commit with `commit`'s parents and message whose tree has `files` changed: what an agent
    would hand to `git replace`."""
    index = sb.root / "twin-index"
    env = {"GIT_INDEX_FILE": str(index)}
    sb.git("read-tree", commit, cwd=cwd, env=env)
    for path, text in files.items():
        blob = sb.git("hash-object", "-w", "--stdin", cwd=cwd, input=text).out.strip()
        sb.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", cwd=cwd, env=env)
    tree = sb.git("write-tree", cwd=cwd, env=env).out.strip()
    raw = sb.git("cat-file", "commit", commit, cwd=cwd).out
    body = "\n".join(f"tree {tree}" if line.startswith("tree ") else line for line in raw.split("\n"))
    return sb.git("hash-object", "-t", "commit", "-w", "--stdin", cwd=cwd, input=body).out.strip()


def test_replacement_objects_fool_no_gate(gates: Sandbox) -> None:
    """`git replace` shows git a twin of a commit: an out-of-zone commit whose in-zone twin is
    what the checks would read, on the server (pushed as refs/replace/..., or made there) and in
    the shared repository (fleet-merge, check --commits)."""
    sb, wt = gates, backend(gates)
    sb.commit(wt, {"src/frontend/app.js": "mine\n"}, "cross the line", extra=("--no-verify",))
    evil = sb.head(cwd=wt)
    good = twin(sb, evil, {"src/frontend/app.js": "app()\n"}, wt)
    res = sb.git("push", "--no-verify", "origin", f"{good}:refs/replace/{evil}", cwd=wt, ok=False)
    assert f"push of refs/replace/{evil} rejected" in res.err
    sb.git("push", "-q", "--no-verify", "origin", f"{good}:refs/heads/scratch", cwd=wt)
    sb.git("update-ref", f"refs/replace/{evil}", good, cwd=sb.root / "server.git")  # made there by other means
    res = sb.git("push", "--no-verify", "origin", "fleet/backend", cwd=wt, ok=False)
    assert "push of fleet/backend rejected" in res.err and "src/frontend/app.js" in res.err
    sb.git("replace", evil, good, cwd=wt)  # in the shared repository
    assert "src/frontend/app.js" in sb.run(["git-fleet-check", "--commits", "backend"], ok=False).err
    assert "src/frontend/app.js" in sb.fleet("merge", "backend", ok=False).err


def test_a_tag_named_like_an_agents_branch_is_that_agents_work(gates: Sandbox) -> None:
    """`git merge fleet/backend` takes a tag of that name before the branch: what it merges is
    still held to backend's zone."""
    sb, wt = gates, backend(gates)
    sb.git("checkout", "-q", "-b", "tmp", cwd=wt)
    sb.commit(wt, {"README.md": "pwned\n"}, "evil", extra=("--no-verify",))
    evil = sb.head(cwd=wt)
    sb.git("checkout", "-q", "fleet/backend", cwd=wt)
    sb.git("branch", "-q", "-D", "tmp", cwd=wt)
    sb.git("tag", "fleet/backend", evil, cwd=wt)
    res = sb.git("merge", "--no-edit", "fleet/backend", ok=False)
    assert "merge of fleet/backend rejected" in res.err and "README.md" in res.err
    sb.git("merge", "--abort")


def test_a_conflicted_merge_stays_checked_when_the_branch_moves_on(gates: Sandbox) -> None:
    sb, wt = gates, backend(gates)
    sb.commit(sb.repo, {"src/backend/api.py": "orchestrator\n"}, "on main")
    sb.commit(wt, {"src/backend/api.py": "agent\n", "README.md": "pwned\n"}, "agent", extra=("--no-verify",))
    sb.git("merge", "--no-edit", "fleet/backend", ok=False)  # a conflict in api.py
    sb.write_files({"src/backend/api.py": "both\n"})
    sb.git("add", "src/backend/api.py")
    sb.commit(wt, {"src/backend/more.py": "more\n"}, "more work")  # the branch's tip is elsewhere now
    res = sb.git("commit", "--no-edit", ok=False)
    assert "merge of fleet/backend rejected" in res.err and "README.md" in res.err


def test_a_change_git_carries_through_a_move_on_the_base_is_out_of_zone(gates: Sandbox) -> None:
    """The orchestrator moves src/backend/helpers.py to lib/; backend, not synced, edits it where
    it was: merged, git puts the edit in lib/helpers.py, which is not backend's."""
    sb, wt = gates, backend(gates)
    server = sb.root / "server.git"
    sb.commit(sb.repo, {"src/backend/helpers.py": "".join(f"{i}\n" for i in range(30))}, "helpers")
    sb.fleet("sync", "backend")
    sb.git("mv", "src/backend/helpers.py", "lib-helpers.py")
    sb.git("commit", "-qm", "move")
    sb.write_files({"src/backend/helpers.py": "".join(f"{i}{' edited' if i == 5 else ''}\n" for i in range(30))}, wt)
    sb.git("commit", "-qam", "edit", cwd=wt)
    assert sb.run(["git-fleet-check", "--commits", "backend"]).code == 0  # each commit is in its zone
    main = sb.head("main")
    res = sb.fleet("merge", "backend", ok=False)
    assert "the merge would change lib-helpers.py, outside its zone" in res.err and sb.head("main") == main
    # nor does the server, in merges mode, take such a merge
    sb.git("config", "fleet.basePush", "merges", cwd=server)
    push_base(sb)
    merged = sb.git("merge-tree", "--write-tree", "main", "fleet/backend").out.split()[0]
    forged = sb.git("commit-tree", merged, "-p", "main", "-p", "fleet/backend", "-m",
                    "Merge fleet/backend (agent backend)").out.strip()
    sb.git("push", "-q", "origin", "fleet/backend", cwd=wt)
    res = sb.git("push", "--no-verify", "origin", f"{forged}:refs/heads/main", ok=False)
    assert "merges fleet/backend" in res.err and "lib-helpers.py" in res.err


def test_merge_settings_in_the_shared_config_do_not_shape_a_checkpoint(gates: Sandbox) -> None:
    """merge.directoryRenames = true would carry a new file of backend's into the directory the
    base moved: fleet-merge makes git's default merge."""
    sb, wt = gates, backend(gates)
    sb.commit(sb.repo, {"src/backend/util/a.py": "a\n", "src/backend/util/b.py": "b\n"}, "util")
    sb.fleet("sync", "backend")
    sb.git("mv", "src/backend/util", "lib-util")
    sb.git("commit", "-qm", "move util")
    sb.commit(wt, {"src/backend/util/new.py": "new\n"}, "new file")
    sb.git("config", "merge.directoryRenames", "true", cwd=wt)
    res = sb.fleet("merge", "backend", ok=False)
    # git's default merge: a conflict over where the new file goes, not a file carried into lib-util/
    assert "backend: lib-util/new.py conflicts with main" in res.err and "outside its zone" not in res.err, res.err
    assert not (sb.repo / "lib-util/new.py").exists()
    assert sb.git("ls-tree", "-r", "--name-only", "main").out.count("lib-util/new.py") == 0


def test_the_registered_worktree_is_the_agent_for_fleet_commands_too(gates: Sandbox) -> None:
    """As for the commit hook: backend's worktree with web's branch checked out is backend's."""
    sb, wt = gates, backend(gates)
    sb.git("checkout", "-q", "--ignore-other-worktrees", "fleet/web", cwd=wt)
    res = sb.run(["git", "fleet-teleport", "push", "web"], cwd=wt, ok=False)
    assert "agent 'backend' cannot teleport another agent" in res.err


def test_a_branch_of_no_agent_merged_into_an_agents_is_its_own_work(gates: Sandbox) -> None:
    sb, wt = gates, backend(gates)
    sb.git("checkout", "-q", "-b", "scratch", cwd=wt)
    sb.commit(wt, {"src/frontend/app.js": "mine\n", "src/backend/api.py": "scratch\n"}, "scratch", extra=("--no-verify",))
    sb.git("checkout", "-q", "fleet/backend", cwd=wt)
    sb.commit(wt, {"src/backend/api.py": "mine\n"}, "mine")
    res = sb.git("merge", "--no-edit", "scratch", cwd=wt, ok=False)  # conflicts in api.py first
    sb.write_files({"src/backend/api.py": "both\n"}, wt)
    sb.git("add", "src/backend/api.py", cwd=wt)
    res = sb.git("commit", "--no-edit", cwd=wt, ok=False)
    assert "merge of fleet/backend rejected" in res.err and "src/frontend/app.js" in res.err


def test_an_honest_merge_of_the_servers_base_goes_back_to_it(gates: Sandbox) -> None:
    """In merges mode the server takes a merge of its own base into a clone's (git merge
    origin/main, which --no-ff makes a merge commit), and a merge of an agent's branch as another
    clone fetched it (origin/fleet/backend)."""
    sb, wt = gates, backend(gates)
    server = sb.root / "server.git"
    sb.git("config", "fleet.basePush", "merges", cwd=server)
    other = sb.root / "other"
    sb.git("clone", "-q", str(server), str(other))
    sb.commit(wt, {"src/backend/api.py": "v2\n"}, "in zone")
    sb.git("push", "-q", "origin", "fleet/backend", cwd=wt)
    sb.git("fetch", "-q", cwd=other)
    sb.git("merge", "-q", "--no-ff", "--no-edit", "origin/fleet/backend", cwd=other)
    sb.git("push", "-q", "origin", "main", cwd=other)
    sb.commit(sb.root / "repo-web", {"src/frontend/app.js": "v2\n"}, "web's")
    sb.fleet("merge", "web")
    sb.git("push", "-q", "origin", "fleet/web")
    sb.git("fetch", "-q", "origin")
    sb.git("merge", "-q", "--no-edit", "origin/main")
    assert len(sb.git("rev-list", "--parents", "-1", "main").out.split()) == 3
    sb.git("push", "-q", "origin", "main")
    assert sb.git("ls-remote", "origin", "main").out.split()[0] == sb.head("main")
    sb.git("config", "--unset", "fleet.basePush", cwd=server)  # a server set up before the setting: open
    sb.commit(sb.repo, {"docs/guide.md": "x\n"}, "own")
    sb.git("push", "-q", "origin", "main")


def test_server_setup_checks_everything_before_it_writes(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.make_repo({"README.md": "x\n", ".gitfleet.toml": 'version = 3\n[agents.backend]\nzone = ["src/**"]\n'})
    server = sb.root / "server.git"
    sb.git("clone", "-q", "--bare", str(sb.repo), str(server))
    (sb.root / "bad.pub").write_text("not a key\n")
    res = sb.run(["git", "fleet-init", "--server", "--base", "dev", "--orchestrator-key", str(sb.root / "bad.pub")],
                 cwd=server, ok=False)
    assert res.code == 2 and "bad.pub is not an SSH public key" in res.err
    sb.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sb.root / "k")])
    res = sb.run(["git", "fleet-init", "--server", "--agent-key", f"bakend={sb.root / 'k.pub'}"], cwd=server, ok=False)
    assert res.code == 2 and "no agent named 'bakend'" in res.err and "agents: backend" in res.err
    assert sb.git("config", "--get-regexp", "^(fleet|receive|gpg)\\.", cwd=server, ok=None).out == ""
    assert not (server / "fleet/signers").exists()


def test_uninstall_works_with_a_broken_configuration_and_takes_out_what_init_set(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    assert sb.git("config", "pull.ff").out.strip() == "true"
    (sb.repo / ".gitfleet.toml").write_text("this is [not toml\n")
    sb.run(["git", "fleet-init", "--uninstall"])
    assert sb.git("config", "pull.ff", ok=None).out == "" and not (sb.repo / ".git/hooks/pre-commit").exists()


# -- a third read ------------------------------------------------------------------------------------

def test_a_line_of_merges_from_an_older_base_commit_takes_nothing_back(gates: Sandbox) -> None:
    """merges mode: a merge of backend's work whose first parent is an older commit of main (or
    its root) fast-forwards, and each merge is fine alone; the push as a whole would take back
    main's README (or drop .gitfleet.toml)."""
    sb, wt = gates, backend(gates)
    server = sb.root / "server.git"
    sb.git("config", "fleet.basePush", "merges", cwd=server)
    sb.git("fetch", "-q", "origin", cwd=wt)
    old = sb.head("origin/main", cwd=wt)
    root = sb.git("rev-list", "--max-parents=0", old, cwd=wt).out.strip()
    for start in (f"{old}~1", root):
        sb.git("checkout", "-q", "--detach", old, cwd=wt)
        sb.commit(wt, {"src/backend/x.py": "x = 1\n"}, "backend: x")
        work = sb.head(cwd=wt)
        index = {"GIT_INDEX_FILE": str(sb.root / "attack-index")}
        sb.git("read-tree", start, cwd=wt, env=index)
        blob = sb.head(f"{work}:src/backend/x.py", cwd=wt)
        sb.git("update-index", "--add", "--cacheinfo", f"100644,{blob},src/backend/x.py", cwd=wt, env=index)
        tree = sb.git("write-tree", cwd=wt, env=index).out.strip()
        evil = sb.git("commit-tree", tree, "-p", sb.head(start, cwd=wt), "-p", work, "-m",
                      "Merge branch 'fleet/backend'", cwd=wt).out.strip()
        res = sb.git("push", "--no-verify", "origin", f"{evil}:refs/heads/main", cwd=wt, ok=False)
        assert "which no agent it merges owns" in res.err, res.err
    assert sb.git("ls-remote", "origin", "main").out.split()[0] == old


def test_a_merge_that_deletes_the_fleets_config_is_refused_by_the_merge_hook(gates: Sandbox) -> None:
    """git writes the merge into the work tree before pre-merge-commit runs: .gitfleet.toml is
    already gone from the main worktree then, which must not read as 'no fleet here'."""
    sb, wt = gates, backend(gates)
    sb.git("merge", "-q", "main", cwd=wt)
    sb.git("rm", "-q", ".gitfleet.toml", cwd=wt)
    sb.write_files({"README.md": "agent was here\n"}, wt)
    sb.git("add", "-A", cwd=wt)
    sb.git("commit", "-q", "--no-verify", "-m", "refactor", cwd=wt)
    main = sb.head("main")
    res = sb.git("merge", "--no-edit", "fleet/backend", ok=False)
    assert ".gitfleet.toml is gone, so nothing can be checked" in res.err and sb.head("main") == main
    sb.git("merge", "--abort")
    assert (sb.repo / ".gitfleet.toml").exists()


def test_with_an_agents_key_a_merge_naming_it_must_merge_what_its_branch_holds(gates: Sandbox) -> None:
    """backend cannot push to fleet/web without web's key; nor can it get web's paths into main
    by a merge that names fleet/web but merges a commit of its own."""
    sb, wt = gates, backend(gates)
    server = sb.root / "server.git"
    sb.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sb.root / "web-key")])
    sb.run(["git", "fleet-init", "--server", "--agent-key", f"web={sb.root / 'web-key.pub'}", "--base-push", "merges"],
           cwd=server)
    sb.git("fetch", "-q", "origin", cwd=wt)
    sb.git("checkout", "-q", "--detach", "origin/main", cwd=wt)
    sb.commit(wt, {"src/frontend/app.js": "HACKED\n"}, "as web", extra=("--no-verify",))
    hack = sb.head(cwd=wt)
    sb.git("checkout", "-q", "--detach", "origin/main", cwd=wt)
    sb.git("merge", "-q", "--no-verify", "--no-ff", hack, "-m", "Merge branch 'fleet/web'", cwd=wt)
    res = sb.git("push", "--no-verify", "origin", "HEAD:refs/heads/main", cwd=wt, ok=False)
    assert "names fleet/web but merges" in res.err


def test_with_an_agents_key_a_merge_naming_it_is_gits_merge_of_what_it_signed(gates: Sandbox) -> None:
    """A merge naming keyed fleet/web that merges web's signed commit but carries other content
    in web's zone, or drops web's change (-s ours), is not web's work merged."""
    sb, wt = gates, backend(gates)
    server, web = sb.root / "server.git", sb.root / "repo-web"
    sb.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sb.root / "web-key")])
    sb.run(["git", "fleet-init", "--server", "--agent-key", f"web={sb.root / 'web-key.pub'}", "--base-push", "merges"],
           cwd=server)
    sb.commit(web, {"src/frontend/app.js": "web v2\n"}, "web's")
    sb.git(*signed(sb, "web-key"), "push", "-q", "--signed", "origin", "fleet/web", cwd=web)
    sb.git("fetch", "-q", "origin", cwd=wt)
    tip = sb.head("origin/fleet/web", cwd=wt)
    index = {"GIT_INDEX_FILE": str(sb.root / "attack-index")}
    sb.git("read-tree", tip, cwd=wt, env=index)
    blob = sb.git("hash-object", "-w", "--stdin", cwd=wt, input="BACKEND WAS HERE\n").out.strip()
    sb.git("update-index", "--cacheinfo", f"100644,{blob},src/frontend/app.js", cwd=wt, env=index)
    tree = sb.git("write-tree", cwd=wt, env=index).out.strip()
    forged = sb.git("commit-tree", tree, "-p", "origin/main", "-p", tip, "-m", "Merge branch 'fleet/web'",
                    cwd=wt).out.strip()
    res = sb.git("push", "--no-verify", "origin", f"{forged}:refs/heads/main", cwd=wt, ok=False)
    assert "otherwise than git's merge of it would" in res.err
    sb.git("checkout", "-q", "--detach", "origin/main", cwd=wt)
    sb.git("merge", "-q", "-s", "ours", "--no-verify", "origin/fleet/web", "-m", "Merge branch 'fleet/web'", cwd=wt)
    res = sb.git("push", "--no-verify", "origin", "HEAD:refs/heads/main", cwd=wt, ok=False)
    assert "otherwise than git's merge of it would" in res.err and "src/frontend/app.js" in res.err


def test_over_git_daemon_the_orchestrators_signed_push_moves_the_base(gates: Sandbox) -> None:
    """Served by a real git daemon (the transport the README advises, with ssh and https): a signed
    push reaches the hook as git checked it, and moves the base; an agent's unsigned push does
    not, whatever it sets in its own environment (which stays on its side of the socket)."""
    sb, wt = gates, backend(gates)
    with git_daemon(sb, sb.root) as url:
        sb.git("remote", "set-url", "origin", f"{url}/server.git")
        sb.commit(wt, {"README.md": "pwned\n"}, "evil", extra=("--no-verify",))
        forged = {"GIT_PUSH_CERT_STATUS": "G", "GIT_PUSH_CERT_NONCE_STATUS": "OK",
                  "GIT_PUSH_CERT_SIGNER": "fleet-orchestrator"}
        res = sb.git("push", "--no-verify", "origin", "HEAD:main", cwd=wt, env=forged, ok=False)
        assert "only the orchestrator's signed pushes move it here" in res.err
        sb.commit(sb.repo, {"docs/guide.md": "the orchestrator's\n"}, "orchestrator")
        push_base(sb)
        assert sb.git("ls-remote", "origin", "main").out.split()[0] == sb.head("main")


def test_an_octopus_merge_is_judged_against_its_first_parent(gates: Sandbox) -> None:
    """git does not re-make an octopus merge (--remerge-diff skips it): what it changes against its
    first parent is its change, so a README slipped into one is out of zone."""
    sb, wt = gates, backend(gates)
    base = sb.head(cwd=wt)
    sides = []
    for name in ("a", "b"):
        sb.git("checkout", "-q", "--detach", base, cwd=wt)
        sb.commit(wt, {f"src/backend/{name}.py": f"{name}\n"}, name)
        sides.append(sb.head(cwd=wt))
    sb.git("checkout", "-q", "fleet/backend", cwd=wt)
    merged = sb.git("merge-tree", "--write-tree", sides[0], sides[1], cwd=wt).out.split()[0]
    index = {"GIT_INDEX_FILE": str(sb.root / "octopus-index")}
    sb.git("read-tree", merged, cwd=wt, env=index)
    blob = sb.git("hash-object", "-w", "--stdin", cwd=wt, input="pwned\n").out.strip()
    sb.git("update-index", "--cacheinfo", f"100644,{blob},README.md", cwd=wt, env=index)
    tree = sb.git("write-tree", cwd=wt, env=index).out.strip()
    octopus = sb.git("commit-tree", tree, "-p", base, "-p", sides[0], "-p", sides[1], "-m", "octopus", cwd=wt).out.strip()
    sb.git("update-ref", "refs/heads/fleet/backend", octopus, cwd=wt)
    res = sb.run(["git-fleet-check", "--commits", "backend"], ok=False)
    assert f"{octopus[:12]}: changed README.md" in res.err
    assert "src/backend/a.py" not in res.err and "src/backend/b.py" not in res.err
