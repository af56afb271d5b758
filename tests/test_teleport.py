"""Teleport between two clones ("machines") through a real bare repository and a real git daemon."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from git_fleet.teleport import FORMAT
from helpers import Sandbox, git_daemon


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
    branch = subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=wt, capture_output=True).stdout  # detached: b""
    return {"branch": branch, "head": git("rev-parse", "HEAD"),
            "index": git("ls-files", "-s", "-z"), "files": files}


def run_hint(sb: Sandbox, err: str) -> Path:
    """Run the command a warning printed to bring a backup back, as printed; returns the worktree
    it made."""
    line = next(ln for ln in err.splitlines() if "to bring it back: " in ln)
    command = line.split("to bring it back: ", 1)[1]
    sb.run(["sh", "-c", command], cwd=sb.repo)
    return Path(shlex.split(command)[4])


def moved_on_there(sb: Sandbox) -> None:
    """api goes to the second machine, commits there (src/backend/there.py) and comes back parked."""
    sb.fleet("teleport", "push", "api")
    sb.fleet("teleport", "pull", "api", cwd=m2(sb))
    sb.commit(sb.root / "m2/repo-api", {"src/backend/there.py": "1\n"}, "there")
    sb.fleet("teleport", "push", "api", cwd=m2(sb))


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
    here = sb.root / "repo-api"
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
    there = sb.root / "m2" / "repo-api"
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
    here = sb.root / "repo-api"
    make_mess(here, sb)
    before = fingerprint(here)
    sb.fleet("teleport", "push", "api")
    sb.git("stash", "-u", "-q", cwd=here)  # a clean worktree
    sb.git("stash", "apply", "-q", "--index", "refs/fleet/teleport/api", cwd=here)
    assert fingerprint(here) == before


@pytest.fixture
def daemon(two: Sandbox) -> Iterator[str]:
    """A real git daemon on 127.0.0.1 serving the hub, pushes allowed."""
    with git_daemon(two, two.root) as url:
        yield f"{url}/hub.git"


@pytest.mark.parametrize("transport", ["file", "git"])
def test_round_trip_over_urls_file_and_a_real_git_daemon(two: Sandbox, transport: str, request: pytest.FixtureRequest) -> None:
    sb = two
    url = request.getfixturevalue("daemon") if transport == "git" else (sb.root / "hub.git").as_uri()
    here = sb.root / "repo-api"
    make_mess(here, sb)
    before = fingerprint(here)
    sb.fleet("teleport", "push", "api", "--remote", url)
    rows = json.loads(sb.fleet("teleport", "list", "--remote", url, "--json", cwd=m2(sb)).out)
    assert [r["agent"] for r in rows] == ["api"]
    sb.fleet("teleport", "pull", "api", "--remote", url, cwd=m2(sb))
    assert fingerprint(sb.root / "m2" / "repo-api") == before


def test_changes_made_here_since_the_teleport_are_never_overwritten(two: Sandbox) -> None:
    sb = two
    here, there = sb.root / "repo-api", sb.root / "m2" / "repo-api"
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
    here, there = sb.root / "repo-api", sb.root / "m2" / "repo-api"
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
    # --force takes the snapshot and keeps what was here; the printed command brings it back
    res = sb.fleet("teleport", "pull", "api", "--force")
    assert "what was here is kept at refs/fleet/backups/api/1; to bring it back: " in res.err
    assert (here / "src/backend/there.py").exists() and not (here / "src/backend/here.py").exists()
    rescued = run_hint(sb, res.err)
    assert {k: v for k, v in fingerprint(rescued).items() if k != "branch"} == {k: v for k, v in mine.items() if k != "branch"}


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
    assert "Build the API" in (sb.root / "m2/repo-api/.fleet/brief.md").read_text()
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
    here = sb.root / "repo-api"
    sb.git("update-index", "--index-info", cwd=here,
           input="100644 " + sb.git("hash-object", "-w", "--stdin", cwd=here, input="a\n").out.strip()
           + " 1\tsrc/backend/c.py\n")
    res = sb.fleet("teleport", "push", "api", ok=False)
    assert res.code == 1 and "unresolved conflicts" in res.err


def test_a_snapshot_from_a_newer_git_fleet_is_refused_and_nothing_is_created(two: Sandbox) -> None:
    sb = two
    sb.fleet("teleport", "push", "api")
    raw = sb.git("cat-file", "commit", "refs/fleet/teleport/api").out
    newer = raw.replace(f'"format": {FORMAT}', f'"format": {FORMAT + 1}')
    oid = sb.git("hash-object", "-t", "commit", "-w", "--stdin", input=newer).out.strip()
    sb.git("push", "-q", "--force", "origin", f"{oid}:refs/fleet/teleport/api")
    res = sb.fleet("teleport", "pull", "api", cwd=m2(sb), ok=False)
    assert res.code == 1 and "made by a newer git-fleet" in res.err and f"snapshot format {FORMAT + 1}" in res.err
    assert "upgrade git-fleet" in res.err
    assert "api" not in (m2(sb) / ".gitfleet.toml").read_text()
    assert not (sb.root / "m2" / "repo-api").exists()
    assert sb.git("branch", "--list", "fleet/api", cwd=m2(sb)).out == ""


def test_pull_recreates_a_registered_agent_whose_worktree_is_gone(two: Sandbox) -> None:
    sb = two
    here = sb.root / "repo-api"
    make_mess(here, sb)
    before = fingerprint(here)
    sb.fleet("teleport", "push", "api", "--remote", "../../hub.git", cwd=sb.repo / "src")  # a path, from a subdirectory
    sb.git("worktree", "remove", "--force", str(here))
    sb.fleet("teleport", "pull", "api")
    assert fingerprint(here) == before


# -- lossless under faults ----------------------------------------------------------------------------

def index_times(wt: Path, rel: str) -> tuple[int, int]:
    """(ctime, mtime) seconds that the worktree's index records for `rel` (git ls-files --debug)."""
    debug = subprocess.run(["git", "ls-files", "--debug", "--", rel], cwd=wt, capture_output=True, text=True,
                           check=True).stdout
    times = dict(line.strip().split(": ", 1) for line in debug.splitlines()[1:3])
    return int(times["ctime"].split(":")[0]), int(times["mtime"].split(":")[0])


def test_a_same_size_edit_in_the_second_of_a_checkout_is_carried(two: Sandbox) -> None:
    """A checkout writes a file and the index; in that same second the file is rewritten in
    place with as many bytes. Its stat data then matches the index, and only git's racy-entry
    check (file time not older than the index) sees the change: push must carry it, and a pull
    back must not overwrite it."""
    sb = two
    here = sb.root / "repo-api"
    path = here / "src/backend/api.py"
    for _ in range(10):
        sb.git("reset", "-q", "--hard", cwd=here)  # writes the file, then the index
        st = path.stat()
        with open(path, "r+b") as fh:
            fh.write(b"def api(): PASS\n")  # the same size, in place: same inode
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # what a 1-second file system would show
        if index_times(here, "src/backend/api.py") == (int(path.stat().st_ctime), int(st.st_mtime)):
            break  # (ctime cannot be set: try again if the edit fell in the next second)
    else:
        pytest.fail("could not edit the file within the second of its checkout")
    index = Path(sb.git("rev-parse", "--path-format=absolute", "--git-path", "index", cwd=here).out.strip())
    os.utime(index, ns=(st.st_mtime_ns, st.st_mtime_ns))  # the index written in the file's second: racy
    time.sleep(1.1)  # a copy of the index made now would be a second newer, and trust the stat data
    res = sb.fleet("teleport", "push", "api")
    assert "0 staged, 1 unstaged, 0 untracked" in res.out
    assert sb.git("show", "refs/fleet/teleport/api:src/backend/api.py").out == "def api(): PASS\n"
    sb.fleet("teleport", "pull", "api")  # back over the same worktree: nothing to do, nothing lost
    assert path.read_text() == "def api(): PASS\n"


@pytest.fixture
def one_second_fs(tmp_path: Path) -> Iterator[Path]:
    """A file system whose timestamps have one-second granularity (ext2 with 128-byte inodes on a
    loop device), where the race above happens by itself. Needs root and loop devices."""
    image, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(64 << 20)
    made = subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-I", "128", str(image)], capture_output=True)
    mounted = made.returncode == 0 and subprocess.run(["mount", "-o", "loop", str(image), str(mnt)],
                                                      capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a loop device here (the os.utime test covers the same case)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_same_size_edit_on_a_one_second_file_system(two: Sandbox, one_second_fs: Path) -> None:
    sb = two
    wt = one_second_fs / "repo-api"
    sb.fleet("rm", "api")
    sb.fleet("add", "api", "--zone", "src/backend/**", "--path", str(wt))
    path = wt / "src/backend/api.py"
    for _ in range(10):
        sb.git("reset", "-q", "--hard", cwd=wt)
        before = path.stat()
        with open(path, "r+b") as fh:
            fh.write(b"def api(): PASS\n")
        if path.stat().st_mtime == before.st_mtime:
            break
    else:
        pytest.fail("could not edit the file within the second of its checkout")
    time.sleep(1.1)
    assert "0 staged, 1 unstaged, 0 untracked" in sb.fleet("teleport", "push", "api").out
    assert sb.git("show", "refs/fleet/teleport/api:src/backend/api.py").out == "def api(): PASS\n"


def test_pull_never_restores_into_another_clones_worktree(two: Sandbox) -> None:
    """Two clones side by side, the config committed with the agent's path spelled out (as
    git-fleet wrote it before {repo}): '../repo-api' of the second clone is the first clone's
    worktree. The pull must not touch it; it makes a worktree of its own instead."""
    sb = two
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('branch = "fleet/api"\n', 'branch = "fleet/api"\nworktree = "../repo-api"\n'))
    sb.git("add", ".gitfleet.toml")
    sb.git("commit", "-qm", "the fleet's config")
    sb.git("push", "-q", "origin", "main")
    here = sb.root / "repo-api"
    make_mess(here, sb)
    sb.fleet("teleport", "push", "api")
    (here / "src/backend/mine.txt").write_text("the first clone's own, untracked\n")
    first = fingerprint(here)
    clone2 = sb.root / "repo2"
    sb.git("clone", "-q", str(sb.root / "hub.git"), str(clone2), cwd=sb.root)
    sb.git("fleet-init", cwd=clone2)
    assert [(r["agent"], r["state"]) for r in json.loads(sb.fleet("list", "--json", cwd=clone2).out)] == [
        ("api", "missing branch")]
    res = sb.fleet("teleport", "pull", "api", cwd=clone2, ok=False)
    assert res.code == 1
    assert f"{here} exists and is not a worktree of this repository" in res.err and "nothing was changed" in res.err
    assert "git fleet-teleport pull api --path DIR" in res.err
    assert fingerprint(here) == first
    # pulled again, with --force: still never there
    assert sb.fleet("teleport", "pull", "api", "--force", cwd=clone2, ok=False).code == 1
    assert fingerprint(here) == first
    mine = sb.root / "clone2-api"
    sb.fleet("teleport", "pull", "api", "--path", str(mine), cwd=clone2)
    assert {k: v for k, v in fingerprint(mine).items()} == {**first, "files": {
        k: v for k, v in first["files"].items() if k != "src/backend/mine.txt"}}  # type: ignore[dict-item]
    # from now on every command of the second clone finds its own worktree, by its branch
    rows = json.loads(sb.fleet("list", "--json", cwd=clone2).out)
    assert rows[0]["worktree"] == str(mine) and rows[0]["state"] == "ok"
    assert sb.fleet("teleport", "pull", "api", cwd=clone2).out.endswith("already as the snapshot has it; 0 claimed task(s)\n")
    assert fingerprint(here) == first


def test_clones_side_by_side_keep_their_worktrees_apart_by_default(two: Sandbox) -> None:
    """The default path names the repository: a second clone beside the first, with the config
    committed, pulls the agent into a worktree named for itself, and registers it there only."""
    sb = two
    sb.git("add", ".gitfleet.toml")
    sb.git("commit", "-qm", "the fleet's config")
    sb.git("push", "-q", "origin", "main")
    sb.fleet("teleport", "push", "api")
    assert "worktree" not in sb.git("show", "main:.gitfleet.toml").out.split("[agents.api]")[1]
    clone2 = sb.root / "repo2"
    sb.git("clone", "-q", str(sb.root / "hub.git"), str(clone2), cwd=sb.root)
    sb.git("fleet-init", cwd=clone2)
    res = sb.fleet("teleport", "pull", "api", cwd=clone2)
    assert f"in {sb.root / 'repo2-api'}:" in res.out
    assert sb.git("config", "fleet-agent.api.worktree", cwd=clone2).out.strip() == str(sb.root / "repo2-api")
    assert sb.git("config", "fleet-agent.api.worktree").out.strip() == str(sb.root / "repo-api")
    for where, clone in ((sb.root / "repo-api", sb.repo), (sb.root / "repo2-api", clone2)):
        assert json.loads(sb.fleet("list", "--json", cwd=clone).out)[0]["worktree"] == str(where)


def test_every_forced_pull_keeps_its_own_backup(two: Sandbox) -> None:
    sb = two
    here, there = sb.root / "repo-api", sb.root / "m2" / "repo-api"
    sb.fleet("teleport", "push", "api")
    sb.fleet("teleport", "pull", "api", cwd=m2(sb))
    states = []
    for round_ in (1, 2):
        sb.commit(there, {"src/backend/there.py": f"{round_}\n"}, f"there {round_}")
        sb.fleet("teleport", "push", "api", cwd=m2(sb))
        sb.commit(here, {f"src/backend/here{round_}.py": "1\n"}, f"here {round_}")
        (here / f"src/backend/wip{round_}.txt").write_text(f"work in progress {round_}\r\n")
        states.append(fingerprint(here))
        res = sb.fleet("teleport", "pull", "api", "--force")
        assert f"kept at refs/fleet/backups/api/{round_};" in res.err
        states[-1]["hint"] = res.err  # type: ignore[assignment]
    assert sb.git("for-each-ref", "--format=%(refname)", "refs/fleet/backups/").out.split() == [
        "refs/fleet/backups/api/1", "refs/fleet/backups/api/2"]
    for state in states:  # both stay reachable, and each printed command brings its own back
        rescued = run_hint(sb, str(state.pop("hint")))
        assert {k: v for k, v in fingerprint(rescued).items() if k != "branch"} == \
            {k: v for k, v in state.items() if k != "branch"}


def test_a_backup_from_an_older_git_fleet_is_kept_as_number_one(two: Sandbox) -> None:
    sb = two
    here = sb.root / "repo-api"
    sb.fleet("teleport", "push", "api")
    old = sb.head("refs/fleet/teleport/api")
    sb.git("update-ref", "refs/fleet/teleport-backup/api", old)
    (here / "src/backend/wip.txt").write_text("wip\n")
    sb.fleet("teleport", "push", "api", "--force", "--remote", "origin")
    sb.git("reset", "-q", "--hard", cwd=here)
    sb.git("clean", "-qfd", cwd=here)
    (here / "src/backend/other.txt").write_text("other\n")
    res = sb.fleet("teleport", "pull", "api", "--force")
    assert "kept at refs/fleet/backups/api/2;" in res.err
    assert sb.head("refs/fleet/backups/api/1") == old
    assert sb.git("for-each-ref", "refs/fleet/teleport-backup/").out == ""


def test_line_endings_and_bytes_come_back_exactly_and_filters_are_kept(two: Sandbox) -> None:
    """`* text=auto` normalises CRLF when git stores a file; a snapshot keeps the bytes on disk.
    A path under a filter driver goes through the driver, as git would store it: the snapshot
    never holds what the filter keeps out of the repository."""
    sb = two
    here = sb.root / "repo-api"
    for clone in (sb.repo, m2(sb)):  # a filter driver (rot13 standing in for git-crypt), on both machines
        sb.git("config", "filter.rot13.clean", "tr A-Za-z N-ZA-Mn-za-m", cwd=clone)
        sb.git("config", "filter.rot13.smudge", "tr A-Za-z N-ZA-Mn-za-m", cwd=clone)
        sb.git("config", "filter.rot13.required", "true", cwd=clone)
    sb.commit(here, {".gitattributes": "* text=auto\n*.secret filter=rot13\n",
                     "src/backend/staged.txt": "one\n"}, "attributes", extra=("--no-verify",))
    (here / "src/backend/api.py").write_bytes(b"def api():\r\n    return 1\r\n")  # modified, CRLF
    (here / "src/backend/staged.txt").write_bytes(b"staged\r\nmixed\n")
    sb.git("add", "src/backend/staged.txt", cwd=here)  # staged; the bytes on disk keep their CRLF
    (here / "src/backend/new.txt").write_bytes(b"untracked\r\nCRLF\r\n")
    (here / "src/backend/key.secret").write_bytes(b"Plain Secret\r\n")  # untracked, filtered
    # through its filter text=auto would store it with LF: it could not come back as it is
    res = sb.fleet("teleport", "push", "api", ok=False)
    assert "through it they would not come back as they are on disk:\n" \
           "error:   src/backend/key.secret (filter=rot13)" in res.err
    assert "`eol` or `-text` attribute" in res.err
    (here / "src/backend/key.secret").write_bytes(b"Plain Secret\n")
    before = fingerprint(here)
    sb.fleet("teleport", "push", "api")
    def blob(rev: str) -> bytes:
        return subprocess.run(["git", "cat-file", "-p", rev], cwd=sb.repo, capture_output=True, check=True).stdout

    snap = "refs/fleet/teleport/api"
    assert blob(f"{snap}:src/backend/api.py") == b"def api():\r\n    return 1\r\n"
    assert blob(f"{snap}^3:src/backend/key.secret") == b"Cynva Frperg\n"  # stored through its filter
    sb.fleet("teleport", "pull", "api", cwd=m2(sb))
    assert fingerprint(sb.root / "m2" / "repo-api") == before
    assert (sb.root / "m2/repo-api/src/backend/key.secret").read_bytes() == b"Plain Secret\n"


def test_work_in_other_repositories_is_refused_not_left_behind(two: Sandbox) -> None:
    sb = two
    lib = sb.root / "lib"
    sb.make_repo({"lib.c": "int x;\n"}, lib)
    sb.git("submodule", "add", "-q", str(lib), "src/backend/lib")
    sb.git("commit", "-qm", "a submodule")
    sb.fleet("sync", "api")
    here = sb.root / "repo-api"
    sb.git("submodule", "update", "-q", "--init", cwd=here)
    sb.fleet("teleport", "push", "api")  # a clean submodule travels as its commit
    sub = here / "src/backend/lib"
    (sub / "lib.c").write_text("int x = 1;\n")
    res = sb.fleet("teleport", "push", "api", ok=False)
    assert res.code == 1 and "belongs to other repositories" in res.err
    assert "submodule src/backend/lib: modified files of its own" in res.err
    sb.git("commit", "-qam", "only in the submodule", cwd=sub)
    res = sb.fleet("teleport", "push", "api", ok=False)
    assert "submodule src/backend/lib: commits of its own" in res.err
    sb.git("add", "src/backend/lib", cwd=here)  # staged: the snapshot would point at a commit only here
    res = sb.fleet("teleport", "push", "api", ok=False)
    only_here = sb.head("HEAD", cwd=sub)
    assert f"submodule src/backend/lib: commit {only_here[:12]} is on no remote of the submodule" in res.err
    sb.git("push", "-q", "origin", "HEAD:refs/heads/more", cwd=sub)  # published: it travels
    sb.fleet("teleport", "push", "api")
    sb.git("restore", "-q", "--staged", "src/backend/lib", cwd=here)
    sb.git("submodule", "update", "-q", cwd=here)  # undone, as the hint says
    sb.make_repo({"x": "1\n"}, here / "src/backend/vendored")
    res = sb.fleet("teleport", "push", "api", ok=False)
    assert "src/backend/vendored/: a repository of its own, not tracked here" in res.err
    assert ".git/info/exclude" in res.err
    with open(sb.repo / ".git/info/exclude", "a") as fh:
        fh.write("vendored/\n")
    sb.fleet("teleport", "push", "api")
    res = sb.fleet("teleport", "pull", "api", cwd=m2(sb))
    assert "submodule update --init" in res.err


def test_pull_never_restores_into_the_main_worktree(two: Sandbox) -> None:
    sb = two
    sb.fleet("teleport", "push", "api")
    sb.git("worktree", "remove", str(sb.root / "repo-api"))
    sb.git("switch", "-q", "fleet/api")  # the orchestrator looks at the agent's branch
    (sb.repo / "notes.txt").write_text("the orchestrator's own\n")
    res = sb.fleet("teleport", "pull", "api", "--force", ok=False)
    assert res.code == 1 and "fleet/api is checked out in the main worktree" in res.err
    assert (sb.repo / "notes.txt").read_text() == "the orchestrator's own\n"


def test_odd_names_marked_entries_and_a_directory_turned_link_travel(two: Sandbox) -> None:
    """Names git would unquote ('"b"') or cannot put on a line (a newline), files behind
    assume-unchanged and skip-worktree, and a tracked directory replaced by a symbolic link."""
    sb = two
    here = sb.root / "repo-api"
    sb.commit(here, {".gitattributes": "* text=auto\n", "src/backend/sub/x.py": "x\n"}, "setup",
              extra=("--no-verify",))
    (here / '"b"').write_text("quoted name\n")
    (here / "b").write_text("plain name\n")
    (here / "src/backend/new\nline.txt").write_bytes(b"newline in the name\r\n")
    (here / "src/backend/crlf.txt").write_bytes(b"kept\r\nas is\r\n")
    sb.git("update-index", "--assume-unchanged", "src/backend/api.py", cwd=here)
    (here / "src/backend/api.py").write_text("def api(): return 'assumed'\n")
    sb.git("update-index", "--skip-worktree", "src/backend/README.md", cwd=here)
    (here / "src/backend/README.md").write_text("# skipped, but edited\n")
    shutil.rmtree(here / "src/backend/sub")
    (here / "elsewhere").mkdir()
    (here / "src/backend/sub").symlink_to("../../elsewhere")
    before = fingerprint(here)
    res = sb.fleet("teleport", "push", "api")
    assert "0 staged, 3 unstaged" in res.out
    sb.fleet("teleport", "pull", "api", cwd=m2(sb))
    there = sb.root / "m2" / "repo-api"
    assert (there / '"b"').read_text() == "quoted name\n" and (there / "b").read_text() == "plain name\n"
    assert (there / "src/backend/crlf.txt").read_bytes() == b"kept\r\nas is\r\n"
    assert (there / "src/backend/api.py").read_text() == "def api(): return 'assumed'\n"
    assert (there / "src/backend/README.md").read_text() == "# skipped, but edited\n"
    assert os.readlink(there / "src/backend/sub") == "../../elsewhere"
    assert fingerprint(there) == before


def test_a_pull_after_a_format_1_snapshot(two: Sandbox) -> None:
    """A snapshot an older git-fleet made (format 1) is read and compared by its content."""
    sb = two
    here = sb.root / "repo-api"
    (here / "src/backend/wip.py").write_text("wip\n")
    sb.fleet("teleport", "push", "api")
    raw = sb.git("cat-file", "commit", "refs/fleet/teleport/api").out
    head, _, message = raw.partition("\n\n")
    subject, _, body = message.partition("\n\n")
    meta = json.loads(body)
    meta.pop("filtered")
    meta["format"] = 1
    old = sb.git("hash-object", "-t", "commit", "-w", "--stdin",
                 input=f"{head}\n\n{subject}\n\n{json.dumps(meta, indent=1, sort_keys=True)}\n").out.strip()
    sb.git("push", "-q", "--force", "origin", f"{old}:refs/fleet/teleport/api")
    sb.fleet("teleport", "pull", "api", cwd=m2(sb))  # the older snapshot, remembered there
    (here / "src/backend/more.py").write_text("more\n")
    sb.fleet("teleport", "push", "api", "--force")
    res = sb.fleet("teleport", "pull", "api", cwd=m2(sb))  # nothing changed there since: no refusal
    assert "1 claimed" not in res.err and (sb.root / "m2/repo-api/src/backend/more.py").exists()


def test_a_backup_that_cannot_be_kept_stops_the_pull(two: Sandbox) -> None:
    sb = two
    here = sb.root / "repo-api"
    moved_on_there(sb)
    (here / "src/backend/mine.py").write_text("mine\n")
    sb.git("update-ref", "refs/fleet/backups/api", sb.head())  # a ref where the backups' directory goes
    before = fingerprint(here)
    res = sb.fleet("teleport", "pull", "api", "--force", ok=False)
    assert res.code == 1 and "cannot keep what is here at refs/fleet/backups/api/N" in res.err
    assert "nothing was changed" in res.err and fingerprint(here) == before


@pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed (.ci/run installs it)")
def test_an_lfs_file_travels_with_its_payload(two: Sandbox) -> None:
    """git-lfs uploads in its pre-push hook: a snapshot push runs hooks, as any push does."""
    sb = two
    for clone in (sb.repo, m2(sb)):
        sb.git("fleet-init", "--uninstall", cwd=clone)
        sb.git("lfs", "install", "--local", cwd=clone)
        sb.git("fleet-init", cwd=clone)  # the fleet's hooks chain git-lfs's
    here = sb.root / "repo-api"
    sb.commit(here, {".gitattributes": "*.bin filter=lfs diff=lfs merge=lfs -text\n"}, "lfs", extra=("--no-verify",))
    (here / "src/backend/data.bin").write_bytes(b"LARGE PAYLOAD\n" * 100)
    sb.fleet("teleport", "push", "api")
    assert list((sb.root / "hub.git/lfs/objects").rglob("*")), "the payload did not reach the remote"
    config = (m2(sb) / ".gitfleet.toml").read_bytes()
    sb.fleet("teleport", "pull", "api", cwd=m2(sb))
    assert (sb.root / "m2/repo-api/src/backend/data.bin").read_bytes() == b"LARGE PAYLOAD\n" * 100
    assert config != (m2(sb) / ".gitfleet.toml").read_bytes()  # the agent was registered there


def test_a_pull_that_fails_while_restoring_leaves_this_clone_as_it_was(two: Sandbox) -> None:
    sb = two
    here = sb.root / "repo-api"
    sb.git("config", "filter.rot13.clean", "tr A-Za-z N-ZA-Mn-za-m")
    sb.git("config", "filter.rot13.smudge", "tr A-Za-z N-ZA-Mn-za-m")
    sb.commit(here, {".gitattributes": "*.secret filter=rot13\n"}, "attributes", extra=("--no-verify",))
    (here / "src/backend/key.secret").write_text("Plain\n")
    sb.fleet("teleport", "push", "api")
    sb.git("config", "filter.rot13.smudge", "false", cwd=m2(sb))  # there, the driver fails
    sb.git("config", "filter.rot13.required", "true", cwd=m2(sb))
    config = (m2(sb) / ".gitfleet.toml").read_bytes()
    res = sb.fleet("teleport", "pull", "api", cwd=m2(sb), ok=False)
    assert res.code == 1 and "rot13" in res.err
    assert (m2(sb) / ".gitfleet.toml").read_bytes() == config
    assert sb.git("branch", "--list", "fleet/api", cwd=m2(sb)).out == ""
    assert not (sb.root / "m2/repo-api").exists()
    assert sb.git("worktree", "list", cwd=m2(sb)).out.count("\n") == 1


def test_pull_refuses_while_something_works_in_the_worktree(two: Sandbox) -> None:
    """An agent started by hand (not in the fleet's tmux) still works in its worktree: replacing
    the files under it would lose what it writes. An idle shell there, or the pull's own pipe, is
    no reason to refuse."""
    sb = two
    here = sb.root / "repo-api"
    moved_on_there(sb)
    agent = sb.spawn(["sleep", "300"], cwd=here)
    try:
        res = sb.fleet("teleport", "pull", "api", ok=False)
        assert f"processes work in {here}: pid {agent.pid} (sleep)" in res.err and "nothing was changed" in res.err
        assert not (here / "src/backend/there.py").exists()
    finally:
        sb.kill_group(agent)
    shell = sb.spawn(["sh", "-c", "read x"], cwd=here, stdin=subprocess.PIPE)
    try:
        sb.run(["sh", "-c", "git fleet-teleport pull api | cat"], cwd=here)
    finally:
        sb.kill_group(shell)
    assert (here / "src/backend/there.py").exists()


def test_pull_refuses_an_agents_worktree_moved_by_hand(two: Sandbox) -> None:
    """Its record is there, its directory is not: making a new worktree at the configured place
    would take the record's name, and `git worktree repair` would then take the new one away."""
    sb = two
    moved_on_there(sb)
    here, moved = sb.root / "repo-api", sb.root / "moved-api"
    (here / "src/backend/wip.py").write_text("staged work\n")
    sb.git("add", "src/backend/wip.py", cwd=here)
    here.rename(moved)
    res = sb.fleet("teleport", "pull", "api", ok=False)
    assert "a worktree whose directory is gone (moved by hand?)" in res.err and "git worktree repair" in res.err
    assert not here.exists()
    sb.git("worktree", "repair", str(moved))
    assert sb.git("status", "--porcelain", cwd=moved).out == "A  src/backend/wip.py\n"


def test_the_loser_of_two_pushes_at_once_is_told_another_clone_was_first(two: Sandbox) -> None:
    """Both clones hold the snapshot the remote has, and both push at once: both pass the lease
    check, and the remote takes the first to update the ref. A pre-receive hook holds this
    clone's push inside the remote (real concurrent processes) until the other clone's has landed."""
    import socket

    sb = two

    def worktree(repo: Path) -> Path:
        return Path(next(a["worktree"] for a in json.loads(sb.fleet("list", "--json", cwd=repo).out) if a["agent"] == "api"))

    sb.fleet("teleport", "push", "api")
    sb.fleet("teleport", "pull", "api", cwd=m2(sb))
    sent = sb.git("rev-parse", "refs/fleet/teleport/api").out.strip()
    (worktree(sb.repo) / "src/backend/here.py").write_text("here\n")
    (worktree(m2(sb)) / "src/backend/there.py").write_text("there\n")
    hub, gate, go = sb.root / "hub.git", sb.root / "gate", sb.root / "go"
    hook = hub / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\n# the first push waits inside the remote until told to go on\n"
                    f"if mkdir '{gate}' 2>/dev/null; then\n"
                    f"  while [ ! -e '{go}' ]; do sleep 0.05; done\nfi\nexit 0\n")
    hook.chmod(0o755)
    first = sb.spawn(["git", "fleet-teleport", "push", "api"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not gate.exists():
            assert first.poll() is None and time.time() < deadline, "the first push never reached the remote"
            time.sleep(0.05)
        sb.fleet("teleport", "push", "api", cwd=m2(sb))  # the other clone's push lands meanwhile
    finally:
        go.touch()
    err = first.communicate(timeout=60)[1]
    winner = sb.git("rev-parse", "refs/fleet/teleport/api", cwd=m2(sb)).out.strip()
    assert first.returncode == 1, err
    assert (f"error: another clone pushed a snapshot of 'api' to 'origin' first ({winner[:12]}, from "
            f"{socket.gethostname()} at ") in err
    assert "this one was not sent: nothing was replaced, and this worktree is unchanged" in err
    assert "refused" not in err and "hooks" not in err and "Traceback" not in err
    assert "hint: take that one: git fleet-teleport pull api" in err
    assert "hint: or replace it with this worktree's state: git fleet-teleport push api --force" in err
    assert sb.git("ls-remote", str(hub), "refs/fleet/teleport/api").out.split()[0] == winner
    assert sb.git("rev-parse", "refs/fleet/teleport/api").out.strip() == sent  # not taken for sent
    # the hint works: push again with --force replaces it (the hook holds no push now)
    sb.fleet("teleport", "push", "api", "--force")
    assert sb.git("ls-remote", str(hub), "refs/fleet/teleport/api").out.split()[0] not in (winner, sent)
    # and a real refusal by the remote's hooks keeps its own message
    hook.write_text("#!/bin/sh\necho 'no snapshots here' >&2\nexit 1\n")
    (worktree(sb.repo) / "src/backend/more.py").write_text("more\n")
    res = sb.fleet("teleport", "push", "api", ok=False)
    assert res.code == 1 and "error: remote 'origin' refused the snapshot of 'api'" in res.err
    assert "check the remote's hooks and your access to it" in res.err and "another clone" not in res.err
