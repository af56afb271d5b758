"""Zones enforced by real hooks on real commits, pushes and receives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from helpers import Sandbox


@pytest.fixture
def backend(fleet_repo: Sandbox) -> Path:
    fleet_repo.add_agent("web", "src/frontend/**")
    return fleet_repo.add_agent("backend", "src/backend/**", "!src/backend/**/*.md")


def test_init_installs_hooks_in_the_common_dir(fleet_repo: Sandbox) -> None:
    hooks = fleet_repo.repo / ".git/hooks"
    for name in ("pre-commit", "pre-merge-commit", "pre-push", "pre-receive"):
        assert "git-fleet-hook-v1" in (hooks / name).read_text()
        assert os.access(hooks / name, os.X_OK)


@pytest.mark.parametrize("form", ["index", "all", "paths"])
def test_out_of_zone_commit_is_rejected_in_every_commit_form(fleet_repo: Sandbox, backend: Path, form: str) -> None:
    sb = fleet_repo
    (backend / "docs/guide.md").write_text("agent edit\n")
    (backend / "src/backend/api.py").write_text("v2\n")
    if form == "index":
        sb.git("add", "-A", cwd=backend)
        res = sb.git("commit", "-m", "x", cwd=backend, ok=False)
    elif form == "all":
        res = sb.git("commit", "-a", "-m", "x", cwd=backend, ok=False)
    else:
        res = sb.git("commit", "-m", "x", "docs/guide.md", "src/backend/api.py", cwd=backend, ok=False)
    assert "commit rejected: agent 'backend' changed 1 path(s) outside its zone" in res.err
    assert "modified docs/guide.md  (owned by no agent: the orchestrator's)" in res.err
    assert "hint: zone of 'backend': src/backend/**  !src/backend/**/*.md" in res.err
    assert sb.head(cwd=backend) == sb.head("main")
    # the same forms go through with only in-zone paths
    sb.git("reset", "-q", cwd=backend)
    sb.git("checkout", "--", "docs/guide.md", cwd=backend)
    if form == "index":
        sb.git("add", "-A", cwd=backend)
        sb.git("commit", "-q", "-m", "ok", cwd=backend)
    elif form == "all":
        sb.git("commit", "-q", "-a", "-m", "ok", cwd=backend)
    else:
        sb.git("commit", "-q", "-m", "ok", "src/backend/api.py", cwd=backend)
    assert sb.git("log", "-1", "--format=%s", cwd=backend).out.strip() == "ok"


@pytest.mark.parametrize("change, expected", [
    ("add", "added src/frontend/new.js  (owned by 'web')"),
    ("delete", "deleted src/frontend/app.js  (owned by 'web')"),
    ("rename-out", "renamed to src/frontend/api.py  (owned by 'web')"),
    ("rename-in", "renamed away src/frontend/app.js  (owned by 'web')"),
    ("excluded", "modified src/backend/README.md  (owned by no agent: the orchestrator's)"),
])
def test_each_kind_of_change_is_checked(fleet_repo: Sandbox, backend: Path, change: str, expected: str) -> None:
    sb = fleet_repo
    if change == "add":
        (backend / "src/frontend/new.js").write_text("x\n")
    elif change == "delete":
        (backend / "src/frontend/app.js").unlink()
    elif change == "rename-out":
        sb.git("mv", "src/backend/api.py", "src/frontend/api.py", cwd=backend)
    elif change == "rename-in":
        sb.git("mv", "src/frontend/app.js", "src/backend/app.js", cwd=backend)
    else:
        (backend / "src/backend/README.md").write_text("changed\n")
    sb.git("add", "-A", cwd=backend)
    res = sb.git("commit", "-m", change, cwd=backend, ok=False)
    assert expected in res.err, res.err
    assert "leave changes to another agent's paths to that agent (web)" in res.err or "orchestrator's" in expected


def test_the_fleet_config_and_hooks_cannot_be_changed_by_an_agent(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.commit(sb.repo, {"x": "1"}, "orchestrator commits the config", extra=())
    sb.git("add", ".gitfleet.toml")
    sb.git("commit", "-q", "-m", "fleet config")
    wt = sb.add_agent("everything", "**")
    (wt / ".gitfleet.toml").write_text("# mine now\n")
    sb.git("add", "-A", cwd=wt)
    res = sb.git("commit", "-m", "take over", cwd=wt, ok=False)
    assert ".gitfleet.toml  (the fleet's own configuration; only the orchestrator changes it)" in res.err


def test_an_agent_cannot_widen_its_zone_from_its_own_checkout(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.git("add", ".gitfleet.toml")
    sb.git("commit", "-q", "-m", "fleet config")
    wt = sb.add_agent("backend", "src/backend/**")
    copy = wt / ".gitfleet.toml"
    copy.write_text(copy.read_text().replace('"src/backend/**"', '"**"'))  # its own copy, never trusted
    res = sb.commit(wt, {"docs/guide.md": "mine\n"}, "widen", ok=False)
    assert "docs/guide.md" in res.err


def test_orchestrator_and_branches_of_no_agent_are_not_restricted(fleet_repo: Sandbox, backend: Path) -> None:
    sb = fleet_repo
    sb.commit(sb.repo, {"src/backend/api.py": "orchestrator\n", "docs/guide.md": "o\n"}, "orchestrator")
    sb.git("worktree", "add", "-q", "-b", "scratch", str(sb.root / "scratch"))
    sb.commit(sb.root / "scratch", {"docs/guide.md": "scratch\n"}, "free branch")


def test_a_zone_change_takes_effect_at_once(fleet_repo: Sandbox, backend: Path) -> None:
    sb = fleet_repo
    sb.commit(backend, {"src/backend/one.py": "1\n"}, "in zone")
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('zone = ["src/backend/**", "!src/backend/**/*.md"]', 'zone = ["lib/**"]'))
    res = sb.commit(backend, {"src/backend/two.py": "2\n"}, "now outside", ok=False)
    assert "added src/backend/two.py" in res.err and "zone of 'backend': lib/**" in res.err


def test_agent_worktree_on_another_branch_is_still_the_agents(fleet_repo: Sandbox, backend: Path) -> None:
    sb = fleet_repo
    sb.git("switch", "-q", "-c", "escape", cwd=backend)
    res = sb.commit(backend, {"docs/guide.md": "x\n"}, "escape", ok=False)
    assert "agent 'backend'" in res.err


def test_malformed_config_is_reported_by_the_hook_with_file_and_line(fleet_repo: Sandbox, backend: Path) -> None:
    sb = fleet_repo
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text() + "\n[agents.broken\n")
    res = sb.commit(backend, {"src/backend/x.py": "x\n"}, "x", ok=False)
    lines = cfg.read_text().count("\n")
    assert f"error: {cfg}:{lines}:" in res.err
    assert "Traceback" not in res.err


def test_special_paths(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    wt = sb.add_agent("data", "data files/**", "日本/")
    sb.commit(wt, {"data files/a b.bin": bytes(range(256)), "日本/é.txt": "ok\n"}, "in zone")
    os.symlink("../docs/guide.md", wt / "data files/link")
    sb.git("add", "-A", cwd=wt)
    sb.git("commit", "-q", "-m", "symlink inside the zone", cwd=wt)
    os.symlink("data files/a b.bin", wt / "outside link")
    sb.git("add", "-A", cwd=wt)
    res = sb.git("commit", "-m", "symlink outside", cwd=wt, ok=False)
    assert 'added "outside link"' in res.err  # quoted, as git status quotes a path with a space
    sb.git("rm", "-q", "--cached", "outside link", cwd=wt)
    (wt / "outside link").unlink()
    res = sb.commit(wt, {"日本x/é.txt": "no\n"}, "near miss", ok=False)
    assert "日本x/é.txt" in res.err


def test_submodule_path_is_checked_like_a_file(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    lib = sb.make_repo({"lib.c": "int x;\n"}, sb.root / "libsrc")
    wt = sb.add_agent("vendor", "vendor/**")
    sb.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib", cwd=wt)
    res = sb.git("commit", "-m", "submodule", cwd=wt, ok=False)
    assert "added .gitmodules" in res.err and "vendor/lib" not in res.err.split("outside its zone")[1]


# -- existing hooks are kept ------------------------------------------------------------------------

def test_an_existing_hook_is_chained_and_still_runs(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.make_repo({"a.txt": "1\n", "src/x": "x\n"})
    hook = sb.repo / ".git/hooks/pre-commit"
    hook.write_text('#!/bin/sh\necho ran >> "$(git rev-parse --git-common-dir)/user-hook-ran"\n'
                    'test ! -e "$(git rev-parse --show-toplevel)/BLOCK"\n')
    hook.chmod(0o755)
    sb.fleet("init")
    sb.fleet("init")  # again: harmless
    assert (sb.repo / ".git/hooks/pre-commit.pre-fleet").read_text().startswith("#!/bin/sh\necho ran")
    wt = sb.add_agent("a", "src/**")
    sb.commit(wt, {"src/y": "y\n"}, "agent commit")
    sb.commit(sb.repo, {"a.txt": "2\n"}, "orchestrator commit")
    assert (sb.repo / ".git/user-hook-ran").read_text() == "ran\nran\n"
    (wt / "BLOCK").write_text("")
    sb.commit(wt, {"src/z": "z\n"}, "blocked by the user's hook", ok=False)
    # uninstall puts the user's hook back as it was
    sb.fleet("init", "--uninstall")
    assert hook.read_text().startswith("#!/bin/sh\necho ran") and not (sb.repo / ".git/hooks/pre-commit.pre-fleet").exists()
    assert not (sb.repo / ".git/hooks/pre-push").exists()


def test_husky_style_hooks_path_is_never_written(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.make_repo({".husky/pre-commit": "npm test\n", "a": "1"})
    sb.git("config", "core.hooksPath", ".husky")
    res = sb.fleet("init")
    assert res.code == 0
    assert (sb.repo / ".husky/pre-commit").read_text() == "npm test\n"
    assert sorted(p.name for p in (sb.repo / ".husky").iterdir()) == ["pre-commit"]
    assert f"hint: add to {sb.repo / '.husky/pre-commit'}:  git-fleet-check --hook pre-commit" in res.err
    assert "core.hooksPath" in res.err
    wt = sb.add_agent("a", "src/**")
    # the hooks directory inside the checkout is protected from agents
    res = sb.commit(wt, {".husky/pre-commit": "exit 0\n"}, "disable", ok=None)
    assert res.code == 0  # no fleet hook runs here (the user has not added the line yet) ...
    res = sb.run(["git-fleet-check", "--commits", "a"], ok=False)  # ... but the branch check catches it
    assert "changed .husky/pre-commit  (the repository's hooks; only the orchestrator changes them)" in res.err


def test_absolute_hooks_path_of_this_repo_is_chained(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.make_repo({"a": "1", "src/x": "x"})
    shared = sb.root / "shared-hooks"
    shared.mkdir()
    (shared / "pre-commit").write_text("#!/bin/sh\ntouch \"$HOME/shared-ran\"\n")
    (shared / "pre-commit").chmod(0o755)
    sb.git("config", "core.hooksPath", str(shared))
    sb.fleet("init")
    assert (shared / "pre-commit.pre-fleet").exists() and "git-fleet-hook-v1" in (shared / "pre-commit").read_text()
    wt = sb.add_agent("a", "src/**")
    sb.commit(wt, {"other": "x"}, "out", ok=False)
    assert (Path(os.environ["HOME"]) / "shared-ran").exists()


# -- pushes and servers: --no-verify gets nothing through -----------------------------------------------

def test_pre_push_rejects_a_no_verify_commit(fleet_repo: Sandbox, backend: Path) -> None:
    sb = fleet_repo
    remote = sb.root / "remote.git"
    sb.git("init", "-q", "--bare", str(remote))
    sb.git("remote", "add", "origin", str(remote))
    sb.commit(backend, {"src/backend/ok.py": "ok\n"}, "fine")
    sb.commit(backend, {"docs/guide.md": "sneaky\n"}, "sneaky", extra=("--no-verify",))
    sneaky = sb.head(cwd=backend)
    res = sb.git("push", "origin", "fleet/backend", cwd=backend, ok=False)
    assert "push of fleet/backend rejected" in res.err and f"{sneaky[:12]}: changed docs/guide.md" in res.err
    assert "git rebase -i" in res.err
    assert sb.git("ls-remote", str(remote), "fleet/backend").out == ""
    sb.git("reset", "-q", "--hard", "HEAD~1", cwd=backend)
    # the first push to an empty remote: only the agent's own commits are held to its zone,
    # not the base branch's history it started from
    sb.git("push", "-q", "origin", "fleet/backend", cwd=backend)
    assert sb.git("ls-remote", str(remote), "fleet/backend").out.split()[0] == sb.head(cwd=backend)


def test_server_pre_receive_rejects_out_of_zone_pushes(fleet_repo: Sandbox, backend: Path) -> None:
    sb = fleet_repo
    sb.git("add", ".gitfleet.toml")
    sb.git("commit", "-q", "-m", "fleet config")
    server = sb.root / "server.git"
    sb.git("clone", "-q", "--bare", str(sb.repo), str(server))
    sb.fleet("init", "--server", cwd=server)
    assert "git-fleet-hook-v1" in (server / "hooks/pre-receive").read_text()
    sb.git("remote", "add", "server", str(server))
    sb.commit(backend, {"src/frontend/app.js": "mine\n"}, "cross the line", extra=("--no-verify",))
    res = sb.git("push", "--no-verify", "server", "fleet/backend", cwd=backend, ok=False)
    assert "push of fleet/backend rejected" in res.err and "changed src/frontend/app.js  (owned by 'web')" in res.err
    sb.git("reset", "-q", "--hard", "HEAD~1", cwd=backend)
    sb.commit(backend, {"src/backend/fine.py": "ok\n"}, "fine")
    sb.git("push", "-q", "--no-verify", "server", "fleet/backend", cwd=backend)
    # pushes to branches of no agent are not restricted
    sb.git("push", "-q", "--no-verify", "server", "HEAD:refs/heads/scratch", cwd=backend)
    # the base moves only by merges of agent branches, unless the owner opens it
    sb.commit(sb.repo, {"docs/guide.md": "o\n"}, "orchestrator")
    res = sb.git("push", "--no-verify", "server", "main", ok=False)
    assert "push of main rejected" in res.err and "is not a merge of an agent's branch" in res.err
    sb.git("config", "fleet.basePush", "any", cwd=server)
    sb.git("push", "-q", "--no-verify", "server", "main")


def test_check_commits_is_the_gate_without_hooks(fleet_repo: Sandbox, backend: Path) -> None:
    sb = fleet_repo
    sb.commit(backend, {"src/backend/a.py": "a\n"}, "fine")
    assert sb.run(["git-fleet-check", "--commits"]).code == 0
    sb.commit(backend, {"README.md": "x\n"}, "bad", extra=("--no-verify",))
    res = sb.run(["git-fleet-check", "--commits", "backend"], ok=False)
    assert res.code == 1 and "branch fleet/backend: agent 'backend' changed 1 path(s)" in res.err
    res = sb.run(["git-fleet-check", "--commits", "ghost"], ok=False)
    assert res.code == 2 and "no agent named 'ghost'" in res.err
    res = sb.run(["git-fleet-check", "--bogus"], ok=False)
    assert res.code == 2 and "usage: git fleet-check" in res.err


def test_hook_without_git_fleet_installed_warns_and_lets_through(fleet_repo: Sandbox, backend: Path) -> None:
    sb = fleet_repo
    hook = sb.repo / ".git/hooks/pre-commit"
    hook.write_text(hook.read_text().replace("python='", "python='/nonexistent", 1))
    env = {"PATH": "/usr/bin:/bin"}
    sb.write_files({"docs/guide.md": "x\n"}, backend)
    res = sb.git("commit", "-qam", "x", cwd=backend, env=env)
    assert "git-fleet-check is not on PATH" in res.err
    assert stat.S_IMODE(hook.stat().st_mode) & 0o111


def test_hook_falls_back_to_git_fleet_check_on_path(fleet_repo: Sandbox, backend: Path) -> None:
    sb = fleet_repo
    hook = sb.repo / ".git/hooks/pre-commit"
    hook.write_text(hook.read_text().replace("python='", "python='/nonexistent", 1))
    res = sb.commit(backend, {"docs/guide.md": "x\n"}, "x", ok=False)  # git-fleet-check is on the tests' PATH
    assert "modified docs/guide.md" in res.err
