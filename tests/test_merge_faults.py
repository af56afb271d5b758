"""Checkpoint merges under faults: processes killed at every moment (their whole process group),
git killed between its own lock renames, changes made while a merge runs, stale locks, tests
that hang, print too much or are stopped. After any of it, and one fleet command, the base is
the old commit or the new one, and no lock, journal or scratch worktree is left."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import Sandbox, repo_state

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int ends_with(const char *path, const char *var) {
    const char *suffix = getenv(var);
    size_t n = strlen(path), m = suffix ? strlen(suffix) : 0;
    return m && n >= m && strcmp(path + n - m, suffix) == 0;
}

static void die(void) {
    const char *group = getenv("FLEET_TEST_KILL_GROUP");
    kill(group && *group == '1' ? 0 : getpid(), SIGKILL);
}

/* SIGKILL this process ($FLEET_TEST_KILL_GROUP=1: its whole process group) right before a
   rename() onto a path ending in $FLEET_TEST_KILL_BEFORE_RENAME, or right after one onto a path
   ending in $FLEET_TEST_KILL_AFTER_RENAME. */
int rename(const char *from, const char *to) {
    static int (*real)(const char *, const char *);
    if (!real)
        real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    if (ends_with(to, "FLEET_TEST_KILL_BEFORE_RENAME"))
        die();
    int rc = real(from, to);
    if (rc == 0 && ends_with(to, "FLEET_TEST_KILL_AFTER_RENAME"))
        die();
    return rc;
}
"""


@pytest.fixture(scope="session")
def kill_after_rename(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preload library that kills git right after it renames a given lock into place: the
    moment between two of a ref transaction's renames, made exact."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (.ci/run installs gcc)")
    where = tmp_path_factory.mktemp("shim")
    (where / "shim.c").write_text(SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(where / "shim.so"), str(where / "shim.c"), "-ldl"],
                   check=True, capture_output=True)
    return where / "shim.so"


@pytest.fixture
def cp(fleet2: Sandbox) -> Sandbox:
    """fleet2: two agents one commit ahead of main, and a checkpoint of both."""
    return fleet2


def old(sb: Sandbox) -> str:
    """main before the checkpoint: where both agents branched off."""
    return sb.head("fleet/web~1")


def settled(sb: Sandbox) -> str:
    """The invariants after any fault plus one fleet command; returns which state: old or new."""
    git_dir = sb.repo / ".git"
    main = sb.head("main")
    tag = sb.git("rev-parse", "-q", "--verify", "refs/tags/fleet/phase-1^{commit}", ok=None).out.strip()
    locks = sorted(git_dir.rglob("*.lock"))
    assert not locks, f"a lock file was left: {[(str(p), p.read_bytes()[:80]) for p in locks]}"
    assert not (git_dir / "fleet/move-journal").exists(), "the journal was left"
    scratch = git_dir / "fleet/scratch"
    assert not scratch.is_dir() or not list(scratch.iterdir()), "a scratch worktree was left"
    assert sb.git("worktree", "list").out.count("\n") == 3
    # the main worktree is a clean checkout of whatever main is: nothing staged, nothing reversed
    # (status, not `diff --quiet`: that one counts a racily clean entry git has not re-read yet)
    porcelain = sb.git("status", "--porcelain", "--untracked-files=no").out
    assert porcelain == "", (porcelain, sb.git("diff").out, sb.git("ls-files", "--debug", "src/backend/api.py").out,
                             os.stat(sb.repo / "src/backend/api.py"), os.stat(sb.repo / ".git/index"), time.time(),
                             sb.git("status", "--porcelain", "--untracked-files=no").out)
    if main == old(sb):
        assert tag == "", "the checkpoint was tagged although main did not move"
        assert (sb.repo / "src/backend/api.py").read_text() == "def api(): pass\n"
        return "old"
    assert tag == main, "main moved but the tag is missing or elsewhere"
    parents = sb.git("rev-list", "--first-parent", f"{old(sb)}..main").out.split()
    assert len(parents) == 2 and sb.git("log", "-1", "--format=%s", "main^2").out == "web: app v2\n"
    assert (sb.repo / "src/backend/api.py").read_text() == "def api(): return 2\n"
    assert (sb.repo / "src/frontend/app.js").read_text() == "app(2)\n"
    return "new"


def reset(sb: Sandbox) -> None:
    """Back to before the checkpoint, for the next round."""
    sb.git("tag", "-d", "fleet/phase-1", ok=None)
    sb.git("reset", "-q", "--hard", old(sb))


def paused(sb: Sandbox, point: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], Path]:
    """`git fleet-merge --checkpoint phase-1` stopped at a named point (see pause.py)."""
    return sb.paused(["git", "fleet-merge", "--checkpoint", "phase-1", *args], point, env)


def with_test(sb: Sandbox, command: str, timeout: str | None = None) -> None:
    cfg = sb.repo / ".gitfleet.toml"
    extra = f"test = {json.dumps(command)}\n" + (f"timeout = {json.dumps(timeout)}\n" if timeout else "")
    cfg.write_text(cfg.read_text().replace('agents = ["backend", "web"]\n', 'agents = ["backend", "web"]\n' + extra))


def wait_for(path: Path, proc: subprocess.Popen[str] | None = None, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc is None or proc.poll() is None, f"it ended first: {proc.communicate() if proc else ''}"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def merge_in_test(sb: Sandbox) -> tuple[subprocess.Popen[str], Path]:
    """A checkpoint merge whose test has started and waits until the returned file exists."""
    started, release = sb.root / "test-started", sb.root / "release"
    with_test(sb, f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done")
    proc = sb.spawn(["git", "fleet-merge", "--checkpoint", "phase-1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(started, proc)
    return proc, release


def held_in_ref_transaction(sb: Sandbox) -> subprocess.Popen[str]:
    """A checkpoint merge whose first ref transaction holds its locks: git's reference-transaction
    hook reports "prepared" and waits."""
    hook = sb.repo / ".git/hooks/reference-transaction"
    hook.write_text('#!/bin/sh\nif [ "$1" = prepared ] && [ -n "$HOLD_AT" ]; then touch "$HOLD_AT"; sleep 600; fi\n')
    hook.chmod(0o755)
    held = sb.root / "held"
    proc = sb.spawn(["git", "fleet-merge", "--checkpoint", "phase-1"], env={"HOLD_AT": str(held)},
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(held, proc)
    return proc


def sleeping(needle: str) -> list[int]:
    """Live processes of this test whose command line contains `needle`."""
    from conftest import survivors

    return [pid for pid, cmd in survivors(os.environ["FLEET_TEST_RUN"]) if needle in cmd]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


# -- killed at a named moment -------------------------------------------------------------------------

def test_killed_after_the_base_moved_is_finished_by_the_next_command(cp: Sandbox) -> None:
    sb = cp
    proc, _ = paused(sb, "after-ref")
    sb.kill_group(proc)
    assert (sb.repo / ".git/fleet/move-journal").exists()
    assert sb.head("main") != old(sb)
    assert not sb.git("tag").out  # made only once the work tree has followed
    res = sb.fleet("list")
    assert "warning: finished an interrupted merge into main" in res.err
    assert settled(sb) == "new"
    assert sb.git("status", "--porcelain").out == "?? .gitfleet.toml\n"
    assert "phase-1" in (sb.repo / ".git/fleet/checkpoints.log").read_text()


def test_killed_before_the_base_moved_leaves_the_old_state(cp: Sandbox) -> None:
    sb = cp
    before = repo_state(sb)
    proc, _ = paused(sb, "after-journal")
    sb.kill_group(proc)
    assert "had not moved it: nothing was changed" in sb.fleet("list").err
    assert repo_state(sb) == before
    assert settled(sb) == "old"


def test_a_journal_that_cannot_be_read_stops_every_move_and_says_where_things_stand(cp: Sandbox) -> None:
    """Killed after the base moved, with the journal then damaged: nothing guesses. Moving commands
    refuse and say where the journal is and how the base and the work tree stand; others warn
    once and work; doctor shows it, and --discard-journal lets the fleet move branches again."""
    sb = cp
    proc, _ = paused(sb, "after-ref")
    sb.kill_group(proc)
    journal = sb.repo / ".git/fleet/move-journal"
    journal.write_text(journal.read_text()[:20])  # half of it, as a full disk might leave it
    moved = sb.head("main")
    assert moved != old(sb)

    listed = sb.git("fleet-list")  # the installed command, as git starts it
    assert listed.err.count(f"warning: the journal of an interrupted move, {journal}, cannot be read") == 1, listed
    assert "backend" in listed.out
    for command in (["fleet-merge", "--checkpoint", "phase-1"], ["fleet-sync"], ["fleet-checkpoint"]):
        res = sb.git(*command, ok=False)
        assert res.code == 1 and "Traceback" not in res.err, res
        assert f"error: the journal of an interrupted checkpoint merge or sync, {journal}, cannot be read" in res.err, res
        assert f"error:   main is at {moved[:12]}, last moved by 'git-fleet: merge 2 agent(s) into main'" in res.err, res
        assert f"error:   {sb.repo}: its index is locked by an interrupted merge of main to {moved}" in res.err, res
        assert "hint: then: git fleet-doctor --discard-journal" in res.err, res
    assert sb.head("main") == moved and journal.exists()

    doctor = sb.git("fleet-doctor", ok=False)
    assert f"{journal}, cannot be read" in doctor.out and "fix: check main (git reflog -3 main)" in doctor.out, doctor
    assert sb.git("fleet-doctor", "--discard-journal", cwd=sb.root / "repo-backend", ok=False).code == 1
    assert journal.exists()

    done = sb.git("fleet-doctor", "--discard-journal")
    assert "set aside the unreadable journal as" in done.err and not journal.exists(), done
    assert list((sb.repo / ".git/fleet").glob("move-journal.discarded-*")), "the journal is kept for reading"
    assert not (sb.repo / ".git/index.lock").exists(), "the index lock of the lost move is gone with it"
    sb.git("reset", "-q", "--hard")  # the work tree put right by hand: it follows the base
    assert sb.git("fleet-checkpoint").code == 0
    again = sb.git("fleet-doctor", "--discard-journal", ok=False)
    assert "error: there is no journal of an interrupted move to discard" in again.err


@pytest.mark.parametrize("text", ["null", "[]", '{"ref": 5, "old": "a", "new": "b"}'])
def test_a_journal_of_json_that_is_not_a_move_is_unreadable_too(cp: Sandbox, text: str) -> None:
    """Valid JSON that is not the record of a move crashed every command, the way out included.
    It is a journal that cannot be read: moves refuse (teleport pull too), other commands warn,
    an agent's worktree is told where it is dealt with, and doctor --discard-journal ends it."""
    sb = cp
    journal = sb.repo / ".git/fleet/move-journal"
    journal.write_text(text)
    listed = sb.git("fleet-list")
    assert "cannot be read (ValueError: not the record of a move)" in listed.err and "Traceback" not in listed.err, listed
    from_agent = sb.git("fleet-list", cwd=sb.root / "repo-backend")
    assert f"the journal of an interrupted move, {journal}, cannot be read; merges and syncs wait" in from_agent.err
    assert "git fleet-doctor in the main worktree" in from_agent.err, from_agent
    for command in (["fleet-merge", "--checkpoint", "phase-1"], ["fleet-teleport", "pull", "backend", "--remote", "nowhere"]):
        res = sb.git(*command, ok=False)
        assert res.code == 1 and f"{journal}, cannot be read" in res.err and "Traceback" not in res.err, res
    assert "set aside the unreadable journal" in sb.git("fleet-doctor", "--discard-journal").err
    assert not journal.exists()


def test_commands_leave_a_running_merge_alone(cp: Sandbox) -> None:
    """Recovery only runs when the fleet's lock is free: a merge that holds it is alive, however
    long it pauses, and neither an agent's command nor the orchestrator's touches its journal."""
    sb = cp
    proc, marker = paused(sb, "after-journal")
    journal = (sb.repo / ".git/fleet/move-journal").read_bytes()
    sb.fleet("task", "list", cwd=sb.root / "repo-web")
    res = sb.fleet("status")
    assert "interrupted" not in res.err
    assert "warning: a checkpoint merge into main is in progress (pid " in res.err and "git-fleet-merge" in res.err
    assert (sb.repo / ".git/fleet/move-journal").read_bytes() == journal
    marker.unlink()  # let it go on
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert settled(sb) == "new"


def test_a_running_checkpoint_test_keeps_its_scratch_worktree(cp: Sandbox) -> None:
    sb = cp
    proc, release = merge_in_test(sb)
    for where in (sb.repo, sb.root / "repo-web"):
        res = sb.fleet("list", cwd=where)
        assert "interrupted" not in res.err
    assert len([p for p in (sb.repo / ".git/fleet/scratch").iterdir() if p.is_dir()]) == 1  # the test's worktree
    # the test runs without the fleet's lock: a command that changes the fleet goes ahead at once
    res = sb.fleet("add", "docs", "--zone", "docs/**")
    assert "waiting" not in res.err
    release.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # what it merges did not change
    assert sb.git("tag").out.strip() == "fleet/phase-1"


# -- the main worktree changes while a merge runs ------------------------------------------------------

def test_a_change_in_the_main_worktree_during_the_test_stops_the_merge(cp: Sandbox) -> None:
    sb = cp
    proc, release = merge_in_test(sb)
    with open(sb.repo / "src/backend/api.py", "a") as fh:
        fh.write("x\n")  # a path the merge changes
    (sb.repo / "tasks").mkdir()
    (sb.repo / "tasks/note.md").write_text("the bus changes during a test; that is fine\n")
    release.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "local changes would be overwritten" in err and "src/backend/api.py" in err
    assert "nothing was changed" in err
    assert sb.head("main") == old(sb) and not sb.git("tag").out
    assert (sb.repo / "src/backend/api.py").read_text() == "def api(): pass\nx\n"
    assert sb.git("diff-index", "--cached", "--quiet", "HEAD", ok=None).code == 0
    sb.fleet("status")  # every command still works


def test_a_change_after_the_last_check_puts_the_base_back(cp: Sandbox) -> None:
    """The narrowest window: the base has moved and the work tree is about to follow when a file
    the merge changes is edited. The base goes back; the edit stays; nothing else changed."""
    sb = cp
    proc, marker = paused(sb, "after-ref")
    (sb.repo / "src/frontend/app.js").write_text("edited just now\n")
    marker.unlink()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"{sb.repo} cannot follow the merge" in err and "src/frontend/app.js" in err
    assert "main was put back to" in err and "nothing was changed" in err
    assert sb.head("main") == old(sb) and not sb.git("tag").out
    assert (sb.repo / "src/frontend/app.js").read_text() == "edited just now\n"
    assert sb.git("diff-index", "--cached", "--quiet", "HEAD", ok=None).code == 0
    assert not (sb.repo / ".git/fleet/move-journal").exists()
    assert not list((sb.repo / ".git").rglob("*.lock"))


def test_a_commit_cannot_undo_an_unfinished_merge(cp: Sandbox) -> None:
    sb = cp
    proc, _ = paused(sb, "after-ref")
    sb.kill_group(proc)
    # main has the merges, the work tree and index still the old tree: `commit -a` would revert them.
    # The merge's own lock on the index stops it first; git says to remove the lock if no git runs,
    # and then the commit hook stops it
    res = sb.git("commit", "-qam", "oops", ok=False)
    assert "index.lock': File exists" in res.err
    (sb.repo / ".git/index.lock").unlink()
    res = sb.git("commit", "-qam", "oops", ok=False)
    assert "a checkpoint merge into main is not finished; this commit would undo it" in res.err
    assert "any git fleet command in the main worktree (git fleet-status) finishes it" in res.err
    # an agent's own commits go on meanwhile
    sb.commit(sb.root / "repo-web", {"src/frontend/more.js": "more\n"}, "web goes on")
    sb.fleet("status")
    assert settled(sb) == "new"
    assert sb.git("status", "--porcelain").out == "?? .gitfleet.toml\n"


def test_recovery_tells_a_base_that_moved_past_the_merge_from_one_that_never_moved(cp: Sandbox) -> None:
    sb = cp
    proc, _ = paused(sb, "after-ref")
    sb.kill_group(proc)
    new = sb.head("main")
    (sb.repo / ".git/index.lock").unlink()  # the merge's; removed by hand, as git suggests
    sb.git("commit", "-qam", "reverts it without knowing", "--no-verify")
    res = sb.fleet("status")
    assert f"an interrupted merge into main had moved it to {new[:12]}, and main moved on to" in res.err
    assert "undoes the merge's changes to src/backend/api.py src/frontend/app.js" in res.err
    assert f"git restore --source={new[:12]}" in res.err
    assert not (sb.repo / ".git/fleet/move-journal").exists()
    assert sb.head("fleet/phase-1^{commit}") == new
    assert not list((sb.repo / ".git").rglob("*.lock"))
    # the hint works
    sb.git("restore", f"--source={new}", "--staged", "--worktree", "--", "src")
    sb.git("commit", "-qm", "bring the merge back")
    assert (sb.repo / "src/backend/api.py").read_text() == "def api(): return 2\n"


# -- git killed inside its own ref transaction ------------------------------------------------------

@pytest.mark.parametrize("whole_group", [False, True], ids=["git-only", "whole-merge"])
def test_git_killed_between_its_lock_renames(cp: Sandbox, kill_after_rename: Path, whole_group: bool) -> None:
    """git is killed right after it renamed main.lock onto main, before it ends. (Once, main and
    the tag moved in one transaction, and git killed between its renames left main moved, the
    tag missing and the locks of HEAD and the tag behind; now main moves alone, from a git dir
    whose HEAD is elsewhere, and the tag is made once the work tree has followed.) The merge that
    survives git finishes by itself; a merge killed with it is finished by the next command."""
    sb = cp
    env = {"LD_PRELOAD": str(kill_after_rename), "FLEET_TEST_KILL_AFTER_RENAME": "/refs/heads/main",
           "FLEET_TEST_KILL_GROUP": "1" if whole_group else "0"}
    proc = sb.spawn(["git", "fleet-merge", "--checkpoint", "phase-1"], env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    if whole_group:
        assert proc.returncode == -signal.SIGKILL
        assert not (sb.repo / ".git/HEAD.lock").exists()  # git moves main from a git dir whose HEAD is elsewhere
        assert sb.head("main") != old(sb) and not sb.git("tag").out
        res = sb.fleet("status")
        assert "finished an interrupted merge into main" in res.err
    else:
        assert proc.returncode == 0, err
    assert settled(sb) == "new"
    assert sb.fleet("checkpoint", "--json").out.count('"merged"') == 1


def _merge_killed_before_index_lands(sb: Sandbox, kill_after_rename: Path) -> subprocess.Popen[str]:
    """Run the checkpoint merge, killed with its process group as git renames the main worktree's new index into place."""
    env = {"LD_PRELOAD": str(kill_after_rename), "FLEET_TEST_KILL_BEFORE_RENAME": "/repo/.git/index",
           "FLEET_TEST_KILL_GROUP": "1"}
    proc = sb.spawn(["git", "fleet-merge", "--checkpoint", "phase-1"], env=env, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    proc.communicate(timeout=60)
    return proc


def test_killed_while_the_work_tree_follows(cp: Sandbox, kill_after_rename: Path) -> None:
    """`git read-tree -m -u` has written the merged files into the main worktree and is killed
    (with the merge) before its new index lands: the files say new, the index still says old."""
    sb = cp
    proc = _merge_killed_before_index_lands(sb, kill_after_rename)
    assert proc.returncode == -signal.SIGKILL
    assert (sb.repo / "src/backend/api.py").read_text() == "def api(): return 2\n"
    assert (sb.repo / ".git/index.lock").exists()
    assert "finished an interrupted merge into main" in sb.fleet("status").err
    assert settled(sb) == "new"


def test_killed_while_the_work_tree_follows_then_edited(cp: Sandbox, kill_after_rename: Path) -> None:
    """As above, and before the next fleet command someone edits a file the merge changed: the
    merge cannot be finished without losing the edit, so it is undone, files included."""
    sb = cp
    _merge_killed_before_index_lands(sb, kill_after_rename)
    (sb.repo / "src/backend/api.py").write_text("my own edit\n")
    res = sb.fleet("status")
    assert "cannot follow the merge" in res.err and "main was put back to" in res.err
    assert sb.head("main") == old(sb) and not sb.git("tag").out
    assert (sb.repo / "src/backend/api.py").read_text() == "my own edit\n"
    assert (sb.repo / "src/frontend/app.js").read_text() == "app()\n"  # what the killed update wrote is undone
    assert sb.git("status", "--porcelain").out == " M src/backend/api.py\n?? .gitfleet.toml\n"
    assert not list((sb.repo / ".git").rglob("*.lock")) and not (sb.repo / ".git/fleet/move-journal").exists()


def test_git_killed_holding_its_locks_leaves_the_old_state(cp: Sandbox) -> None:
    """git holds main.lock, the tag's lock and HEAD.lock (its reference-transaction hook reports
    "prepared") when the merge's whole group is killed."""
    sb = cp
    proc = held_in_ref_transaction(sb)
    assert (sb.repo / ".git/refs/heads/main.lock").exists()
    sb.kill_group(proc)
    assert "had not moved it" in sb.fleet("status").err
    assert settled(sb) == "old"
    sb.fleet("merge", "--checkpoint", "phase-1")  # and it can be merged at once
    assert settled(sb) == "new"


def test_killed_while_making_the_scratch_worktree(cp: Sandbox) -> None:
    """`git worktree add` of the checkpoint test's scratch worktree is killed (with the merge)
    while its record is still locked "initializing", which `git worktree prune` passes over."""
    sb = cp
    with_test(sb, "true")
    proc = held_in_ref_transaction(sb)
    assert "initializing" in sb.git("worktree", "list", "--porcelain").out
    sb.kill_group(proc)
    # a moment earlier (which no hook reaches) git had not yet written the worktree's .git link:
    # then `git worktree remove` does not know the directory, and prune passes the locked record
    [space] = [p for p in (sb.repo / ".git/fleet/scratch").iterdir() if p.is_dir()]
    (space / "wt/.git").unlink()
    sb.fleet("status")
    assert settled(sb) == "old"
    sb.fleet("merge", "--checkpoint", "phase-1")
    assert settled(sb) == "new"


def test_a_stale_lock_of_someone_else_is_named_not_removed(cp: Sandbox) -> None:
    sb = cp
    lock = sb.repo / ".git/refs/heads/main.lock"
    lock.write_text("1234567890123456789012345678901234567890\n")
    before = repo_state(sb)
    res = sb.fleet("merge", "--checkpoint", "phase-1", ok=False)
    assert res.code == 1 and f"{lock} exists: another git process holds it, or one was killed" in res.err
    assert "nothing was changed" in res.err and "remove the lock file" in res.err
    assert repo_state(sb) == before and lock.exists()
    doctor = sb.fleet("doctor", ok=False).out
    assert "refs/heads/main.lock" in doctor and f"rm {lock}" in doctor
    lock.unlink()
    sb.fleet("merge", "--checkpoint", "phase-1")
    assert settled(sb) == "new"


# -- the checkpoint test within limits ---------------------------------------------------------------

def test_a_test_that_runs_too_long_is_stopped_with_everything_it_started(cp: Sandbox) -> None:
    sb = cp
    pids = sb.root / "pids"
    with_test(sb, f"sleep 300 & echo $! > {pids}; echo waiting; wait", timeout="2s")
    start = time.time()
    res = sb.fleet("merge", "--checkpoint", "phase-1", ok=False)
    assert time.time() - start < 30
    assert "`sleep 300 & echo" in res.err and "did not finish within 2s on the merged result" in res.err
    assert "it was stopped and nothing was changed" in res.err and "    waiting" in res.err
    assert 'timeout = "..." in [checkpoints.phase-1]' in res.err
    assert not alive(int(pids.read_text()))  # the background sleep went with it
    assert settled(sb) == "old"
    # the fleet's lock was let go: a command that needs it runs at once
    sb.fleet("add", "docs", "--zone", "docs/**")


def test_timeout_is_a_version_2_key(cp: Sandbox) -> None:
    sb = cp
    cfg = sb.repo / ".gitfleet.toml"
    with_test(sb, "true", timeout="1m")
    cfg.write_text(cfg.read_text().replace("version = 4\n", "version = 1\n")
                   .replace('worktree = "../{repo}-{agent}"', 'worktree = "../repo-{agent}"'))
    res = sb.fleet("checkpoint", ok=False)
    assert res.code == 2
    assert "'checkpoints.phase-1.timeout' needs `version = 2` at the top of .gitfleet.toml (it says 1)" in res.err
    line = cfg.read_text().splitlines().index('timeout = "1m"') + 1
    assert f"{cfg}:{line}:" in res.err
    cfg.write_text(cfg.read_text().replace("version = 1\n", "version = 6\n"))
    assert "written for a newer git-fleet (schema 6; this one reads 5)" in sb.fleet("checkpoint", ok=False).err


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL", "SIGKILL-merge-only"])
def test_a_stopped_merge_ends_its_test(cp: Sandbox, how: str) -> None:
    """SIGTERM: the merge ends the test (its process group, and what escaped it into a session of
    its own), removes its scratch worktree and says so. SIGKILL of the merge's whole group, or of
    the merge process alone: the test runs apart from the merge, and still ends."""
    sb = cp
    pids = sb.root / "pids"
    with_test(sb, f"sleep 300 & a=$!; setsid sleep 301 & echo $$ $a $! > {pids}.tmp; mv {pids}.tmp {pids}; wait")
    proc = sb.spawn(["git", "fleet-merge", "--checkpoint", "phase-1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(pids, proc)
    test_pids = [int(p) for p in pids.read_text().split()]  # the shell, a sleep, and one in a session of its own
    assert len(test_pids) == 3 and all(alive(p) for p in test_pids)
    if how == "SIGTERM":
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode != 0 and "stopped by SIGTERM; nothing was changed" in err
    elif how == "SIGKILL":
        sb.kill_group(proc)
    else:
        [merge] = [pid for pid in sleeping("git-fleet-merge") if pid != proc.pid]
        os.kill(merge, signal.SIGKILL)
        proc.communicate(timeout=30)
    deadline = time.time() + 10
    while any(alive(p) for p in test_pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in test_pids), "the checkpoint test outlived the merge"
    sb.fleet("status")
    assert settled(sb) == "old"


@pytest.mark.parametrize("command", [
    "sleep 300 & setsid sleep 302 & true",  # a server in the background, one in a session of its own
    "i=0; while [ $i -lt 600 ]; do sleep 301 & i=$((i+1)); done; true",  # hundreds of them
], ids=["setsid", "hundreds"])
def test_what_a_passing_test_leaves_running_is_ended(cp: Sandbox, command: str) -> None:
    """A test that exits 0 and leaves processes running: the merge goes ahead at once (it does not
    wait on their open output, nor reap them one /proc scan at a time), and none is left."""
    sb = cp
    with_test(sb, command)
    start = time.time()
    sb.fleet("merge", "--checkpoint", "phase-1")
    assert time.time() - start < 10
    assert sleeping("sleep 30") == []
    assert settled(sb) == "new"


def test_a_test_that_prints_a_huge_line_is_kept_bounded(cp: Sandbox) -> None:
    sb = cp
    with_test(sb, "head -c 300000000 /dev/zero | tr '\\0' x; echo; echo the last line; ! grep -q 'return 2' src/backend/api.py")
    probe = ("import resource, subprocess, sys\n"
             "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "sys.stdout.write(p.stderr)\n"
             "print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    res = sb.run([sys.executable, "-c", probe, "git", "fleet-merge", "--checkpoint", "phase-1"])
    err = res.out
    assert "fails on the merged result; nothing was changed" in err
    assert "    the last line\n" in err
    shown = [line for line in err.splitlines() if line.startswith("error:     ")]
    assert 0 < len(shown) <= 15 and all(len(line) < 400 for line in shown) and "[line cut]" in err
    maxrss_kib = int(err.rsplit("maxrss", 1)[1])
    assert maxrss_kib < 150 * 1024, f"the merge (or a child) used {maxrss_kib} KiB for the test's output"
    log = sb.repo / ".git/fleet/checkpoint-test.log"
    assert f"all of its output: {log}" in err
    assert 16 * 1024 * 1024 <= log.stat().st_size < 17 * 1024 * 1024
    assert settled(sb) == "old"


# -- a kill at any moment --------------------------------------------------------------------------

def test_killed_at_any_moment(cp: Sandbox) -> None:
    """SIGKILL to the merge's whole process group at many moments, spread over a whole run and
    packed around the moment the base moves; after each, one fleet command, then the invariants."""
    sb = cp
    with_test(sb, "sleep 0.2")
    seen: dict[str, int] = {"old": 0, "new": 0}
    start = time.time()
    proc = sb.spawn(["git", "fleet-merge", "--checkpoint", "phase-1"], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    assert proc.wait(60) == 0
    whole = time.time() - start
    reset(sb)
    rng = random.Random(11)
    journal = sb.repo / ".git/fleet/move-journal"
    n = int(os.environ.get("STRESS_KILL_ROUNDS", "15"))  # more for a longer hunt
    rounds = [("timed", whole * i / (n - 1)) for i in range(n)] + [("journal", rng.uniform(0, 0.08)) for _ in range(n)]
    for kind, delay in rounds:
        proc = sb.spawn(["git", "fleet-merge", "--checkpoint", "phase-1"], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
        if kind == "journal":  # from the moment the journal appears: the ref transaction and after
            deadline = time.time() + 60
            while not journal.exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.0005)
        time.sleep(delay)
        sb.kill_group(proc)
        said = sb.run(["git", "fleet-status"], ok=None).err
        try:
            seen[settled(sb)] += 1
        except AssertionError as e:
            state = {"main": sb.head("main"), "old": old(sb), "api.py": (sb.repo / "src/backend/api.py").read_text(),
                     "reflog": sb.git("reflog", "-4", "main").out, "diff": sb.git("diff").out,
                     "cached": sb.git("diff", "--cached").out}
            raise AssertionError(f"killed ({kind}, {delay:.3f} s), then git fleet-status said:\n{said}\n{state}") from e
        reset(sb)
    assert seen["old"] and seen["new"], seen
    print(seen)


# -- found by a hostile read ------------------------------------------------------------------------

def test_a_live_commits_index_lock_stops_the_merge_and_is_never_removed(cp: Sandbox) -> None:
    """A `git commit -a` in the main worktree waits in its editor, holding index.lock, while the
    checkpoint test runs: the merge must stop, with nothing changed, and the commit must go on."""
    sb = cp
    proc, release = merge_in_test(sb)
    editing, done = sb.root / "editing", sb.root / "done"
    editor = f"sh -c 'echo msg > \"$1\"; touch {editing}; while [ ! -e {done} ]; do sleep 0.05; done' editor"
    (sb.repo / "docs/guide.md").write_text("the orchestrator's edit\n")
    commit = sb.spawn(["git", "commit", "-a"], env={"GIT_EDITOR": editor}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(editing, commit)
    assert (sb.repo / ".git/index.lock").exists()
    release.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "index.lock exists: another git process is using the index" in err
    assert "nothing was changed" in err and sb.head("main") == old(sb) and not sb.git("tag").out
    assert (sb.repo / ".git/index.lock").exists()  # still the commit's
    done.touch()
    assert commit.wait(60) == 0
    assert sb.git("log", "-1", "--format=%s").out == "msg\n"


def test_only_the_merge_process_killed_while_its_git_writes_the_work_tree(cp: Sandbox) -> None:
    """The merge process alone is killed (as an OOM kill would) while its `git read-tree` writes
    files slowly (a smudge filter): that git holds the fleet's lock it inherited, so no command
    recovers beside it; once it has ended, the next command finishes the merge."""
    sb = cp
    started = sb.root / "smudging"
    sb.git("config", "filter.slow.smudge", f"touch {started}; sleep 2; cat")
    sb.git("config", "filter.slow.clean", "cat")
    (sb.repo / ".git/info/attributes").write_text("src/frontend/app.js filter=slow\n")
    proc = sb.spawn(["git", "fleet-merge", "--checkpoint", "phase-1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(started, proc)
    [merge] = [pid for pid in sleeping("git-fleet-merge") if pid != proc.pid]
    os.kill(merge, signal.SIGKILL)
    res = sb.fleet("status")
    assert "is in progress (pid" in res.err  # the orphaned git still holds the lock
    proc.communicate(timeout=60)
    deadline = time.time() + 30
    while sleeping("read-tree") and time.time() < deadline:
        time.sleep(0.1)
    res = sb.fleet("status")
    assert "finished an interrupted merge into main" in res.err
    assert settled(sb) == "new"
    assert sb.git("fsck", "--no-dangling").code == 0


def test_a_merge_waiting_for_the_lock_finishes_a_pending_one_first(cp: Sandbox) -> None:
    """phase-1 is killed after main moved; another command holds the lock while a second merge
    waits for it. When the second gets the lock it must finish phase-1 first, not write over its
    journal (which would leave phase-1 half-moved)."""
    sb = cp
    sb.add_agent("docs", "docs/**")
    sb.commit(sb.root / "repo-docs", {"docs/guide.md": "docs v2\n"}, "docs v2")
    proc, _ = paused(sb, "after-ref")
    sb.kill_group(proc)
    holder = sb.spawn([sys.executable, "-c", "import fcntl, sys, time; fh = open(sys.argv[1], 'a'); "
                       "fcntl.flock(fh, fcntl.LOCK_EX); open(sys.argv[2], 'w').close(); time.sleep(2)",
                       str(sb.repo / ".git/fleet/lock"), str(sb.root / "holding")])
    wait_for(sb.root / "holding", holder)
    second = sb.spawn(["git", "fleet-merge", "docs"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    holder.wait(30)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert "finished an interrupted merge into main" in err
    assert sb.git("log", "--format=%s", "-3", "--first-parent", "main").out.split("\n")[:3] == [
        "Merge fleet/docs (agent docs)", "Merge fleet/web (agent web, checkpoint phase-1)",
        "Merge fleet/backend (agent backend, checkpoint phase-1)"]
    assert sb.git("status", "--porcelain", "--untracked-files=no").out == ""
    assert (sb.repo / "src/backend/api.py").read_text() == "def api(): return 2\n"


def test_a_sync_killed_after_the_branch_moved(cp: Sandbox, kill_after_rename: Path) -> None:
    """A sync moves an agent's branch and its worktree as a merge moves the base: killed between
    the two, the agent's commit is refused (it would drop the base's change) until the next
    command in the main worktree brings the worktree along."""
    sb = cp
    sb.commit(sb.repo, {"src/frontend/lib.js": "lib\n"}, "main adds a file")
    web = sb.root / "repo-web"
    env = {"LD_PRELOAD": str(kill_after_rename), "FLEET_TEST_KILL_AFTER_RENAME": "/refs/heads/fleet/web",
           "FLEET_TEST_KILL_GROUP": "1"}
    proc = sb.spawn(["git", "fleet-sync", "web"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (web / "src/frontend/lib.js").exists()  # the branch moved, its work tree did not
    (web / "src/frontend/app.js").write_text("more work\n")
    (sb.repo / ".git/worktrees/repo-web/index.lock").unlink()  # (the killed move's: else git refuses first)
    res = sb.git("commit", "-qam", "goes on", cwd=web, ok=False)
    assert "a sync of fleet/web is not finished; this commit would undo it" in res.err
    doctor = sb.fleet("doctor", cwd=web, ok=False)  # in the agent's worktree: it says so, and leaves it
    assert "a checkpoint merge or sync was interrupted and is not finished" in doctor.out
    assert "the next git fleet command in the main worktree" in doctor.err
    res = sb.fleet("status")
    assert "finished an interrupted sync of fleet/web" in res.err
    assert (web / "src/frontend/lib.js").read_text() == "lib\n"
    assert sb.git("status", "--porcelain", cwd=web).out == " M src/frontend/app.js\n"
    sb.git("commit", "-qam", "goes on", cwd=web)
    assert sb.git("show", "--stat", "--format=", "HEAD", cwd=web).out.split()[0] == "src/frontend/app.js"


def test_cleaning_up_never_takes_a_running_teleports_scratch_space(cp: Sandbox) -> None:
    """A teleport push works in a scratch space of its own while another command cleans up what
    killed commands left: it must find the space in use and leave it."""
    sb = cp
    hub = sb.root / "hub.git"
    sb.git("init", "-q", "--bare", str(hub))
    sb.git("remote", "add", "origin", str(hub))
    here = sb.root / "repo-backend"
    hashing = sb.root / "hashing"
    sb.git("config", "filter.slow.clean", f"touch {hashing}; sleep 2; cat")
    sb.git("config", "filter.slow.smudge", "cat")
    (sb.repo / ".git/info/attributes").write_text("*.py filter=slow\n")
    (here / "src/backend/api.py").write_text("def api(): return 'pushed'\n")
    push = sb.spawn(["git", "fleet-teleport", "push", "backend"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(hashing, push)
    assert [p for p in (sb.repo / ".git/fleet/scratch").iterdir() if p.is_dir()]
    sb.fleet("status")  # cleans up what killed commands left: nothing here
    out, err = push.communicate(timeout=60)
    assert push.returncode == 0, err
    assert "0 staged, 1 unstaged" in out
    assert sb.git("show", "refs/fleet/teleport/backend:src/backend/api.py").out == "def api(): return 'pushed'\n"


@pytest.mark.skipif(shutil.which("chattr") is None, reason="chattr is not installed")
def test_a_work_tree_update_that_fails_half_way_puts_back_what_it_wrote(cp: Sandbox) -> None:
    sb = cp
    app = sb.repo / "src/frontend/app.js"
    if subprocess.run(["chattr", "+i", str(app)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable files")
    try:
        sb.git("update-index", "--refresh")
        res = sb.fleet("merge", "--checkpoint", "phase-1", ok=False)
    finally:
        subprocess.run(["chattr", "-i", str(app)], capture_output=True)
    assert res.code == 1 and "cannot follow the merge" in res.err and "main was put back to" in res.err
    assert sb.head("main") == old(sb) and not sb.git("tag").out
    assert (sb.repo / "src/backend/api.py").read_text() == "def api(): pass\n"  # written, then put back
    assert sb.git("status", "--porcelain", "--untracked-files=no").out == ""


def test_a_stale_index_lock_stops_the_merge_before_its_test(cp: Sandbox) -> None:
    sb = cp
    ran = sb.root / "test-ran"
    with_test(sb, f"touch {ran}")
    (sb.repo / ".git/index.lock").write_text("")
    reflog = sb.git("reflog", "main").out
    res = sb.fleet("merge", "--checkpoint", "phase-1", ok=False)
    assert res.code == 1 and "index.lock exists" in res.err and "nothing was changed" in res.err
    assert not ran.exists() and sb.git("reflog", "main").out == reflog


# -- found by a second hostile read ------------------------------------------------------------------

def test_a_killed_keeper_stops_the_merge_and_its_test(cp: Sandbox) -> None:
    """The keeper of the checkpoint test is killed: the merge must not wait out the test, must end
    the test's process group, and must say what happened rather than blame an agent."""
    sb = cp
    pids = sb.root / "pids"
    with_test(sb, f"sleep 300 & echo $! > {pids}; wait", timeout="10m")
    proc = sb.spawn(["git", "fleet-merge", "--checkpoint", "phase-1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(pids, proc)
    [keeper] = sleeping("git_fleet.runner")
    start = time.time()
    os.kill(keeper, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert time.time() - start < 15
    assert proc.returncode == 1 and "was stopped: the process that kept it was killed; nothing was changed" in err
    assert "breaks it" not in err and "fails on" not in err
    assert not alive(int(pids.read_text()))
    assert settled(sb) == "old"


def test_a_stop_signal_during_a_sync_finishes_that_agent_and_syncs_no_more(cp: Sandbox) -> None:
    sb = cp
    sb.commit(sb.repo, {"README.md": "# moved on\n"}, "main moves on")
    proc, marker = paused(sb, "after-ref", env={})
    sb.kill_group(proc)  # (that was a merge; the sync below is what this test is about)
    sb.fleet("status")
    before = {n: sb.head(f"fleet/{n}") for n in ("backend", "web")}
    marker = sb.root / "sync-paused"
    sync = sb.spawn(["git", "fleet-sync"], env={"GIT_FLEET_TEST_PAUSE": "after-ref", "GIT_FLEET_TEST_MARKER": str(marker)},
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(marker, sync)
    os.killpg(sync.pid, signal.SIGTERM)  # held off while the branch moves
    time.sleep(0.3)
    marker.unlink()
    out, err = sync.communicate(timeout=60)
    assert sync.returncode != 0 and "stopped by SIGTERM once fleet/backend had moved: the sync is done" in err
    assert sb.head("fleet/backend") != before["backend"] and sb.head("fleet/web") == before["web"]
    assert (sb.root / "repo-backend/README.md").read_text() == "# moved on\n"
    assert sb.git("status", "--porcelain", cwd=sb.root / "repo-backend").out == ""
    assert not (sb.repo / ".git/fleet/move-journal").exists()


def test_killed_while_putting_the_base_back(cp: Sandbox) -> None:
    """The work tree cannot follow (a file edited in the last moment), and the merge is killed while
    git puts main back (its lock on main holds the old value): the next command recognises that
    lock as the merge's and finishes putting it back."""
    sb = cp
    before = old(sb)
    hook = sb.repo / ".git/hooks/reference-transaction"
    hook.write_text('#!/bin/sh\n[ "$1" = prepared ] || exit 0\nwhile read o n r; do\n'
                    '  if [ "$r" = refs/heads/main ] && [ "$n" = "$HOLD_FOR" ]; then touch "$HOLD_AT"; sleep 600; fi\ndone\n')
    hook.chmod(0o755)
    held = sb.root / "held"
    proc, marker = paused(sb, "after-ref", env={"HOLD_FOR": before, "HOLD_AT": str(held)})
    (sb.repo / "src/frontend/app.js").write_text("edited in the last moment\n")
    marker.unlink()
    wait_for(held, proc)
    assert (sb.repo / ".git/refs/heads/main.lock").read_text().strip() == before
    sb.kill_group(proc)
    res = sb.fleet("status")
    assert "cannot follow the merge" in res.err and "main was put back to" in res.err
    assert sb.head("main") == before and not sb.git("tag").out
    assert not list((sb.repo / ".git").rglob("*.lock")) and not (sb.repo / ".git/fleet/move-journal").exists()
    assert (sb.repo / "src/frontend/app.js").read_text() == "edited in the last moment\n"
    assert sb.git("status", "--porcelain", "--untracked-files=no").out == " M src/frontend/app.js\n"


def test_a_worktree_moved_by_hand_is_neither_moved_under_nor_forgotten(cp: Sandbox) -> None:
    """An agent's worktree moved with mv, not yet repaired: a sync of its branch is refused (git
    counts the branch as checked out there), and a merge with a test (a scratch worktree) does
    not prune its record, so `git worktree repair` still brings it back."""
    sb = cp
    with_test(sb, "true")
    web, moved = sb.root / "repo-web", sb.root / "moved-web"
    (web / "src/frontend/staged.js").write_text("staged\n")
    sb.git("add", "src/frontend/staged.js", cwd=web)
    web.rename(moved)
    sb.fleet("merge", "backend")
    res = sb.fleet("sync", "web", ok=False)
    assert "a worktree whose directory is gone (moved by hand?)" in res.err and "git worktree repair" in res.err
    sb.git("worktree", "repair", str(moved))
    assert sb.git("status", "--porcelain", cwd=moved).out == "A  src/frontend/staged.js\n"  # its index kept
    sb.git("commit", "-qm", "staged", cwd=moved)
    sb.fleet("sync", "web")
    assert (moved / "src/backend/api.py").read_text() == "def api(): return 2\n"


def test_a_relative_hooks_path_still_gets_the_moves(cp: Sandbox) -> None:
    sb = cp
    hooks = sb.repo / ".githooks"
    hooks.mkdir()
    seen = sb.root / "seen"
    (hooks / "reference-transaction").write_text(f'#!/bin/sh\n[ "$1" = committed ] && cat >> {seen}\nexit 0\n')
    (hooks / "reference-transaction").chmod(0o755)
    sb.git("config", "core.hooksPath", ".githooks")
    sb.fleet("merge", "--checkpoint", "phase-1")
    assert f"{sb.head('main')} refs/heads/main" in seen.read_text()


def test_a_locked_worktree_whose_directory_is_gone(cp: Sandbox) -> None:
    sb = cp
    sb.fleet("merge", "backend")
    web = sb.root / "repo-web"
    sb.git("worktree", "lock", str(web))
    web.rename(sb.root / "elsewhere")
    res = sb.fleet("sync", "web", ok=False)
    assert f"{web} does not exist" in res.err and "not installed" not in res.err


def test_a_rebasing_sync_killed_midway_leaves_the_agent_as_it_was(cp: Sandbox) -> None:
    """sync = "rebase": the rebase runs in a scratch worktree of its own, and the branch moves only
    afterwards, as any move: killed while rebasing, nothing of the agent's changed."""
    sb = cp
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('sync = "merge"', 'sync = "rebase"'))
    sb.commit(sb.repo, {"README.md": "# moved on\n"}, "main moves on")
    web = sb.root / "repo-web"
    sb.commit(web, {"src/frontend/x.js": "x\n"}, "web: x")
    tip = sb.head("fleet/web")
    rebasing = sb.root / "rebasing"
    hook = sb.repo / ".git/hooks/reference-transaction"  # held at the rebase's first move of HEAD
    hook.write_text(f'#!/bin/sh\n[ "$1" = prepared ] || exit 0\n'
                    f'if [ -d "$(git rev-parse --git-path rebase-merge)" ]; then touch {rebasing}; sleep 600; fi\n')
    hook.chmod(0o755)
    proc = sb.spawn(["git", "fleet-sync", "web"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(rebasing, proc)
    sb.kill_group(proc)
    hook.unlink()
    sb.fleet("status")
    assert sb.head("fleet/web") == tip
    assert sb.git("status", "--porcelain", cwd=web).out == ""
    assert not list((sb.repo / ".git").rglob("rebase-merge")) and not list((sb.repo / ".git").rglob("*.lock"))
    assert sb.git("worktree", "list").out.count("\n") == 3
    sb.fleet("sync", "web")
    assert sb.git("rev-list", "--merges", "main..fleet/web").out == "" and (web / "README.md").read_text() == "# moved on\n"


def test_a_sync_killed_at_any_moment(cp: Sandbox) -> None:
    """A sync killed (its whole process group) at many moments, then one fleet command: the agent's
    branch is the old tip or the merge with the base, and its worktree a clean checkout of it."""
    sb = cp
    sb.commit(sb.repo, {"src/frontend/lib.js": "lib\n"}, "main adds a file")
    web = sb.root / "repo-web"
    tip = sb.head("fleet/web")
    start = time.time()
    assert sb.spawn(["git", "fleet-sync", "web"]).wait(60) == 0
    whole, new = time.time() - start, sb.head("fleet/web")
    n = int(os.environ.get("STRESS_KILL_ROUNDS", "12"))
    seen = {"old": 0, "new": 0}
    for i in range(n + 1):
        sb.git("update-ref", "refs/heads/fleet/web", tip)
        sb.git("reset", "-q", "--hard", tip, cwd=web)
        proc = sb.spawn(["git", "fleet-sync", "web"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(whole * 1.5 * i / n)  # (past its whole time at the end: a loaded machine runs it slower)
        sb.kill_group(proc)
        said = sb.run(["git", "fleet-status"], ok=None).err
        now = sb.head("fleet/web")
        assert now in (tip, new), said
        assert sb.git("status", "--porcelain", "--untracked-files=no", cwd=web).out == "", said
        assert (web / "src/frontend/lib.js").exists() == (now == new), said
        assert not list((sb.repo / ".git").rglob("*.lock")) and not (sb.repo / ".git/fleet/move-journal").exists(), said
        seen["new" if now == new else "old"] += 1
    assert seen["old"] and seen["new"], seen


def test_a_file_the_killed_update_had_begun_to_write(cp: Sandbox) -> None:
    """git writes a file front to back: killed inside that write (as the kill loop once caught it),
    the file holds the beginning of its new version, here nothing of it yet, and the next read-tree
    takes that for a local change. Recovery knows such a file for its own: written after the
    journal, the beginning of one side's version. Made here as such a kill leaves it, as no hook
    reaches into git's write."""
    sb = cp
    proc, _ = paused(sb, "after-ref")
    sb.kill_group(proc)
    (sb.repo / "src/backend/api.py").write_text("def api(): return 2\n")  # written whole
    (sb.repo / "src/frontend/app.js").write_text("")  # begun: opened, not written yet
    res = sb.fleet("status")
    assert "finished an interrupted merge into main" in res.err
    assert settled(sb) == "new"


def test_the_keeper_is_git_fleets_own_not_the_repositorys(cp: Sandbox) -> None:
    """A repository with a git_fleet/ package of its own (git-fleet's, an agent's) must not supply
    the program that runs and judges its checkpoint test."""
    sb = cp
    sb.commit(sb.repo, {"git_fleet/__init__.py": "", "git_fleet/runner.py": "import sys\nsys.exit(0)\n"},
              "a package named like git-fleet's")
    with_test(sb, "false")
    before = sb.head("main")
    res = sb.fleet("merge", "--checkpoint", "phase-1", ok=False)
    assert "`false` fails on main already; nothing was changed" in res.err
    assert sb.head("main") == before and not sb.git("tag").out


def test_a_branch_that_moves_during_the_test_stops_the_merge(cp: Sandbox) -> None:
    sb = cp
    before = sb.head("main")
    proc, release = merge_in_test(sb)
    sb.commit(sb.root / "repo-web", {"src/frontend/late.js": "late\n"}, "web goes on during the test")
    release.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "moved while the checkpoint test ran" in err and "nothing was changed" in err
    assert sb.head("main") == before and not sb.git("tag").out


def test_a_daemon_a_hook_starts_does_not_keep_the_fleets_lock(cp: Sandbox) -> None:
    """An fsmonitor hook starts a daemon, as watchman's does: none of the git processes that the
    fleet's lock is lent to may start it, or it would hold the lock after the merge is done."""
    sb = cp
    hook = sb.root / "fsmonitor.sh"
    hook.write_text("#!/bin/sh\n(setsid sleep 303 >/dev/null 2>&1 &)\nexit 1\n")
    hook.chmod(0o755)
    sb.git("config", "core.fsmonitor", str(hook))
    try:
        sb.fleet("merge", "--checkpoint", "phase-1")
        res = sb.fleet("add", "docs", "--zone", "docs/**")
        assert "waiting" not in res.err
        assert sleeping("sleep 303")  # the hook ran, and its daemon lives on
        held = [pid for pid in sleeping("sleep 303")
                if any(os.readlink(f"/proc/{pid}/fd/{fd}").endswith("fleet/lock") for fd in os.listdir(f"/proc/{pid}/fd"))]
        assert held == []
    finally:
        for pid in sleeping("sleep 303"):
            os.kill(pid, signal.SIGKILL)


def test_recovery_of_a_merge_whose_base_someone_put_back(cp: Sandbox) -> None:
    sb = cp
    before = old(sb)
    proc, _ = paused(sb, "after-ref")
    sb.kill_group(proc)
    (sb.repo / ".git/index.lock").unlink()  # the merge's, removed by hand as git suggests
    sb.git("reset", "-q", "--soft", before)  # main back where it was (no hook stops a reset)
    res = sb.fleet("status")
    assert "an interrupted merge into main had moved it to " in res.err and "and it was put back to" in res.err
    assert "since (by something else)" in res.err
    assert "had not moved it" not in res.err
    assert sb.head("main") == before and not (sb.repo / ".git/fleet/move-journal").exists()
