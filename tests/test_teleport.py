"""Teleport between two clones ("machines") through a real bare repository and a real git daemon."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Sandbox


@pytest.fixture
def two(fleet_repo: Sandbox) -> Sandbox:
    """Machine one is sb.repo (agents beside it); machine two is a clone at m2/repo, fleet-initialised,
    both with the bare hub.git as origin."""
    sb = fleet_repo
    hub = sb.root / "hub.git"
    sb.git("init", "-q", "--bare", "-b", "main", str(hub))
    sb.commit(sb.repo, {".gitignore": "*.log\n"}, "ignore logs")
    sb.git("remote", "add", "origin", str(hub))
    sb.git("push", "-q", "origin", "main")
    sb.add_agent("api", "src/backend/**", extra=("--model", "opus"))
    (sb.root / "m2").mkdir()
    sb.git("clone", "-q", str(hub), str(sb.root / "m2" / "repo"), cwd=sb.root)
    sb.git("fleet-init", cwd=sb.root / "m2" / "repo")
    return sb


def m2(sb: Sandbox) -> Path:
    return sb.root / "m2" / "repo"


def fingerprint(wt: Path) -> dict[str, object]:
    """Everything a user would compare: branch, commit, index entries, and every file that is not
    ignored, with its bytes, executable bit, or symlink target."""
    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=wt, capture_output=True, check=True).stdout

    files: dict[str, object] = {}
    for raw in git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split(b"\0"):
        if not raw:
            continue
        path = wt / os.fsdecode(raw)
        if not os.path.lexists(path):
            files[os.fsdecode(raw)] = None  # deleted from the work tree
        elif path.is_symlink():
            files[os.fsdecode(raw)] = ("link", os.readlink(path))
        else:
            files[os.fsdecode(raw)] = (path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR))
    return {"branch": git("symbolic-ref", "HEAD"), "head": git("rev-parse", "HEAD"),
            "index": git("ls-files", "-s", "-z"), "files": files}


def make_mess(wt: Path, sb: Sandbox) -> None:
    """Every kind of uncommitted state: staged then changed again, staged only, a deletion, a
    binary, a mode change, a symlink, non-ASCII names, untracked files in new directories, and an
    ignored file that must stay behind."""
    b = wt / "src/backend"
    (b / "api.py").write_text("def api(): return 1\n")
    sb.git("add", "src/backend/api.py", cwd=wt)
    (b / "api.py").write_text("def api(): return 2\n")
    (b / "staged.py").write_text("staged = True\n")
    sb.git("add", "src/backend/staged.py", cwd=wt)
    (b / "README.md").unlink()
    (b / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (b / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (b / "run.sh").chmod(0o755)
    (b / "link").symlink_to("api.py")
    (b / "données é").mkdir()
    (b / "données é" / "ñ.txt").write_text("ü\r\nno newline at end")
    (b / "new" / "deep").mkdir(parents=True)
    (b / "new" / "deep" / "x.py").write_text("x = 1\n")
    (b / "debug.log").write_text("ignored, stays here\n")


def test_round_trip_through_a_bare_repository_restores_everything_exactly(two: Sandbox) -> None:
    sb = two
    here = sb.root / "agent-api"
    sb.commit(here, {"src/backend/committed.py": "c = 1\n"}, "work")
    make_mess(here, sb)
    before = fingerprint(here)
    res = sb.fleet("teleport", "push", "api")
    assert "sent 'api' to origin: fleet/api at" in res.out and "2 staged, 2 unstaged, 5 untracked file(s)" in res.out
    assert "git fleet-teleport pull api" in res.err
    assert fingerprint(here) == before  # the local worktree is left exactly as it was
    assert sb.git("ls-remote", str(sb.root / "hub.git"), "refs/fleet/teleport/api").out

    listed = json.loads(sb.fleet("teleport", "list", "--json", cwd=m2(sb)).out)
    assert [(r["agent"], r["branch"], r["seen_here"], r["untracked"]) for r in listed] == [("api", "fleet/api", False, 5)]
    res = sb.fleet("teleport", "pull", "api", cwd=m2(sb))
    there = sb.root / "m2" / "agent-api"
    assert f"'api' from origin in {there}" in res.out
    assert fingerprint(there) == before
    assert not (there / "src/backend/debug.log").exists()  # ignored files stay on their machine
    agents = {a["agent"]: a for a in json.loads(sb.fleet("list", "--json", cwd=m2(sb)).out)}
    assert agents["api"]["zone"] == ["src/backend/**"] and agents["api"]["branch"] == "fleet/api"
    assert "model = \"opus\"" in (m2(sb) / ".gitfleet.toml").read_text()
    # and the agent's hook works there: its zone applies at once
    (there / "docs/guide.md").write_text("no\n")
    sb.git("add", "docs/guide.md", cwd=there)
    assert "outside its zone" in sb.git("commit", "-qm", "stray", cwd=there, ok=False).err
    sb.git("restore", "--staged", "docs/guide.md", cwd=there)
    sb.git("checkout", "docs/guide.md", cwd=there)

    # teleport back: work continues there, then returns here, where nothing moved meanwhile
    sb.git("commit", "-qm", "from the box", cwd=there)
    (there / "src/backend/api.py").write_text("def api(): return 3\n")
    (there / "src/backend/new/deep/x.py").unlink()
    after = fingerprint(there)
    sb.fleet("teleport", "push", "api", cwd=m2(sb))
    sb.fleet("teleport", "pull", "api")
    assert fingerprint(here) == after
    assert (here / "src/backend/debug.log").exists()  # ignored files here are left alone
    assert sb.git("status", "--porcelain", cwd=here).out == sb.git("status", "--porcelain", cwd=there).out


def test_snapshots_are_stash_entries_that_git_itself_can_apply(two: Sandbox) -> None:
    sb = two
    here = sb.root / "agent-api"
    make_mess(here, sb)
    before = fingerprint(here)
    sb.fleet("teleport", "push", "api")
    sb.git("stash", "-u", "-q", cwd=here)  # a clean worktree
    sb.git("stash", "apply", "-q", "--index", "refs/fleet/teleport/api", cwd=here)
    assert fingerprint(here) == before


@pytest.fixture
def daemon(two: Sandbox) -> Iterator[str]:
    """A real git daemon on 127.0.0.1 serving the hub, pushes allowed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
                             f"--base-path={two.root}", "--listen=127.0.0.1", f"--port={port}", str(two.root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"git://127.0.0.1:{port}/hub.git"
    deadline = time.time() + 10
    while two.git("ls-remote", url, ok=None).code != 0:
        assert proc.poll() is None and time.time() < deadline, "git daemon did not start"
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait()


@pytest.mark.parametrize("transport", ["file", "git"])
def test_round_trip_over_urls_file_and_a_real_git_daemon(two: Sandbox, transport: str, request: pytest.FixtureRequest) -> None:
    sb = two
    url = request.getfixturevalue("daemon") if transport == "git" else (sb.root / "hub.git").as_uri()
    here = sb.root / "agent-api"
    make_mess(here, sb)
    before = fingerprint(here)
    sb.fleet("teleport", "push", "api", "--remote", url)
    rows = json.loads(sb.fleet("teleport", "list", "--remote", url, "--json", cwd=m2(sb)).out)
    assert [r["agent"] for r in rows] == ["api"]
    sb.fleet("teleport", "pull", "api", "--remote", url, cwd=m2(sb))
    assert fingerprint(sb.root / "m2" / "agent-api") == before


def test_changes_made_here_since_the_teleport_are_never_overwritten(two: Sandbox) -> None:
    sb = two
    here, there = sb.root / "agent-api", sb.root / "m2" / "agent-api"
    (here / "src/backend/api.py").write_text("def api(): return 'sent'\n")
    sb.fleet("teleport", "push", "api")
    sb.fleet("teleport", "pull", "api", cwd=m2(sb))
    (there / "src/backend/api.py").write_text("def api(): return 'there'\n")
    sb.fleet("teleport", "push", "api", cwd=m2(sb))
    # meanwhile someone edited here too
    (here / "src/backend/README.md").write_text("edited here\n")
    mine = fingerprint(here)
    res = sb.fleet("teleport", "pull", "api", ok=False)
    assert res.code == 1 and "agent 'api' has changes in" in res.err and "made since it was last teleported" in res.err
    assert f"git -C {here} stash -u" in res.err and "--force" in res.err
    assert fingerprint(here) == mine
    # the hint works: set aside, pull; the edit is kept in the stash
    sb.git("stash", "-u", "-q", cwd=here)
    sb.fleet("teleport", "pull", "api")
    assert (here / "src/backend/api.py").read_text() == "def api(): return 'there'\n"
    assert "+edited here" in sb.git("stash", "show", "-p", cwd=here).out


def test_both_sides_moved_on_refuses_and_force_keeps_a_backup(two: Sandbox) -> None:
    sb = two
    here, there = sb.root / "agent-api", sb.root / "m2" / "agent-api"
    sb.fleet("teleport", "push", "api")
    sb.fleet("teleport", "pull", "api", cwd=m2(sb))
    sb.commit(there, {"src/backend/there.py": "1\n"}, "there")
    sb.fleet("teleport", "push", "api", cwd=m2(sb))
    sb.commit(here, {"src/backend/here.py": "1\n"}, "here")
    (here / "src/backend/wip.py").write_text("wip\n")
    mine = fingerprint(here)
    remote = sb.git("ls-remote", str(sb.root / "hub.git"), "refs/fleet/teleport/api").out
    res = sb.fleet("teleport", "pull", "api", ok=False)
    assert res.code == 1 and "both sides moved on: fleet/api in" in res.err and "stash apply --index" in res.err
    assert fingerprint(here) == mine
    # pushing from here would replace a snapshot this clone has not seen: refused as well
    res = sb.fleet("teleport", "push", "api", ok=False)
    assert res.code == 1 and "holds a snapshot of 'api'" in res.err and "has not seen" in res.err
    assert sb.git("ls-remote", str(sb.root / "hub.git"), "refs/fleet/teleport/api").out == remote
    # --force takes the snapshot and keeps what was here
    res = sb.fleet("teleport", "pull", "api", "--force")
    assert "kept at refs/fleet/teleport-backup/api" in res.err
    assert (here / "src/backend/there.py").exists() and not (here / "src/backend/here.py").exists()
    sb.git("switch", "-q", "-c", "rescue", "refs/fleet/teleport-backup/api^1", cwd=here)
    sb.git("stash", "apply", "-q", "--index", "refs/fleet/teleport-backup/api", cwd=here)
    assert {k: v for k, v in fingerprint(here).items() if k != "branch"} == {k: v for k, v in mine.items() if k != "branch"}


def test_claimed_tasks_travel_with_the_agent(two: Sandbox) -> None:
    sb = two
    sb.fleet("task", "add", "Build the API", "--agent", "api")
    sb.fleet("task", "add", "Something else")
    claimed = json.loads(sb.fleet("task", "claim", "--agent", "api", "--json").out)
    sb.fleet("teleport", "push", "api")
    res = sb.fleet("teleport", "pull", "api", cwd=m2(sb))
    assert "1 claimed task(s)" in res.out
    tasks = {t["name"]: t for t in json.loads(sb.fleet("task", "list", "--json", cwd=m2(sb)).out)}
    assert list(tasks) == [claimed["name"]]
    assert tasks[claimed["name"]]["claimed_by"] == "api" and tasks[claimed["name"]]["title"] == "Build the API"
    assert "Build the API" in (sb.root / "m2/agent-api/.fleet/brief.md").read_text()
    # back home the same task is held again by the agent (its lease renewed), not duplicated
    sb.fleet("teleport", "push", "api", cwd=m2(sb))
    sb.fleet("teleport", "pull", "api")
    tasks = {t["name"]: t for t in json.loads(sb.fleet("task", "list", "--json").out)}
    assert len(tasks) == 2 and tasks[claimed["name"]]["claimed_by"] == "api"


def test_bad_input_is_refused_clearly_and_nothing_changes(two: Sandbox) -> None:
    sb = two
    res = sb.fleet("teleport", "push", "api", "--remote", "nowhere", ok=False)
    assert res.code == 2 and "unknown remote 'nowhere'" in res.err and "origin" in res.err
    res = sb.fleet("teleport", "push", "ghost", ok=False)
    assert res.code == 2 and "no agent named 'ghost'" in res.err
    res = sb.fleet("teleport", "pull", "api", cwd=m2(sb), ok=False)
    assert res.code == 1 and "remote 'origin' holds no snapshot of 'api'" in res.err
    # a remote that rejects the push
    hook = sb.root / "hub.git" / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'no snapshots here' >&2\nexit 1\n")
    hook.chmod(0o755)
    res = sb.fleet("teleport", "push", "api", ok=False)
    assert res.code == 1 and "remote 'origin' refused the snapshot of 'api'" in res.err
    assert sb.git("for-each-ref", "refs/fleet/").out == ""  # not recorded as sent
    hook.unlink()
    # a conflicted index cannot be carried
    here = sb.root / "agent-api"
    sb.git("update-index", "--index-info", cwd=here,
           input="100644 " + sb.git("hash-object", "-w", "--stdin", cwd=here, input="a\n").out.strip()
           + " 1\tsrc/backend/c.py\n")
    res = sb.fleet("teleport", "push", "api", ok=False)
    assert res.code == 1 and "unresolved conflicts" in res.err


def test_a_snapshot_from_a_newer_git_fleet_is_refused_and_nothing_is_created(two: Sandbox) -> None:
    sb = two
    sb.fleet("teleport", "push", "api")
    raw = sb.git("cat-file", "commit", "refs/fleet/teleport/api").out
    newer = raw.replace('"format": 1', '"format": 2')
    oid = sb.git("hash-object", "-t", "commit", "-w", "--stdin", input=newer).out.strip()
    sb.git("push", "-q", "--force", "origin", f"{oid}:refs/fleet/teleport/api")
    res = sb.fleet("teleport", "pull", "api", cwd=m2(sb), ok=False)
    assert res.code == 1 and "made by a newer git-fleet" in res.err and "snapshot format 2" in res.err
    assert "upgrade git-fleet" in res.err
    assert "api" not in (m2(sb) / ".gitfleet.toml").read_text()
    assert not (sb.root / "m2" / "agent-api").exists()
    assert sb.git("branch", "--list", "fleet/api", cwd=m2(sb)).out == ""


def test_pull_recreates_a_registered_agent_whose_worktree_is_gone(two: Sandbox) -> None:
    sb = two
    here = sb.root / "agent-api"
    make_mess(here, sb)
    before = fingerprint(here)
    sb.fleet("teleport", "push", "api", "--remote", "../../hub.git", cwd=sb.repo / "src")  # a path, from a subdirectory
    sb.git("worktree", "remove", "--force", str(here))
    sb.fleet("teleport", "pull", "api")
    assert fingerprint(here) == before
