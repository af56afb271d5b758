"""`git fleet-add` killed (its whole process group, SIGKILL) after it made the branch, after it made
the worktree, while `git worktree add` checks files out, and at many moments in a loop. The next
fleet command finishes the job: what the dead add made is removed while it holds nothing new, or
adopted when work was done in it since, and says so; nothing is left that no config names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from helpers import Result, Sandbox

ZONE = ("--zone", "src/frontend/**")
CLEANED = "warning: removed what an interrupted `git fleet-add web` had made; nothing was registered"


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, "git fleet-add ended before the moment it was to be killed at"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def killed_add(sb: Sandbox, point: str) -> None:
    """`git fleet-add web` killed at a named point (see pause.py)."""
    marker = sb.root / f"paused-at-{point}"
    proc = sb.spawn(["git", "fleet-add", "web", *ZONE], env={"GIT_FLEET_TEST_PAUSE": point,
                                                              "GIT_FLEET_TEST_MARKER": str(marker)},
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(marker, proc)
    sb.kill_group(proc)
    marker.unlink()


def killed_in_checkout(sb: Sandbox) -> None:
    """`git fleet-add web` killed while `git worktree add` checks out the files: a smudge filter
    on one file holds git there."""
    sb.commit(sb.repo, {".gitattributes": "src/frontend/slow.txt filter=hold\n", "src/frontend/slow.txt": "slow\n"},
              "a file that takes its time")
    marker = sb.root / "in-checkout"
    sb.git("config", "filter.hold.smudge", f"sh -c 'touch {marker}; while [ -e {marker} ]; do sleep 0.02; done; cat'")
    proc = sb.spawn(["git", "fleet-add", "web", *ZONE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(marker, proc)
    sb.kill_group(proc)
    marker.unlink()
    sb.git("config", "--unset", "filter.hold.smudge")


def no_leftovers(sb: Sandbox, doctor: bool = True) -> None:
    """The fleet as if web had been added once, cleanly."""
    web = sb.root / "repo-web"
    assert not (sb.repo / ".git/fleet/adding").exists()
    assert [(a["agent"], a["state"]) for a in json.loads(sb.fleet("list", "--json").out)] == [("web", "ok")]
    assert sb.branches() == ["fleet/web", "main"]
    assert not list((sb.repo / ".git").rglob("*.lock"))
    trees = sb.git("worktree", "list", "--porcelain").out
    assert trees.count("worktree ") == 2 and "locked" not in trees and "prunable" not in trees, trees
    assert sb.git("status", "--porcelain", cwd=web).out == ""
    assert (web / "src/frontend/app.js").read_text() == "app()\n"
    assert sorted(p.name for p in sb.root.iterdir() if p.name.startswith("repo-")) == ["repo-web"]
    if doctor:
        found = {c["check"]: c for c in json.loads(sb.fleet("doctor", "--json", ok=None).out)}
        assert found["worktrees"]["ok"] and found["branches"]["ok"] and found["locks"]["ok"], found


def add_again(sb: Sandbox) -> Result:
    res = sb.fleet("add", "web", *ZONE)
    assert "Traceback" not in res.err
    return res


@pytest.mark.parametrize("point", ["add-after-branch", "add-after-worktree"])
def test_killed_at_a_named_point_the_next_add_cleans_up_and_succeeds(fleet_repo: Sandbox, point: str) -> None:
    sb = fleet_repo
    killed_add(sb, point)
    assert "fleet/web" in sb.branches() and (sb.repo / ".git/fleet/adding").exists()
    assert (sb.root / "repo-web").is_dir() == (point == "add-after-worktree")
    assert "web" not in (sb.repo / ".gitfleet.toml").read_text()
    res = add_again(sb)
    assert CLEANED in res.err
    no_leftovers(sb)


def test_killed_between_the_config_and_its_approval_record(fleet_repo: Sandbox) -> None:
    """The config names web, the record of what fleet commands wrote does not yet: either is the
    fleet's own write, never a hand edit that the next command must have approved."""
    sb = fleet_repo
    killed_add(sb, "config-written-unrecorded")
    assert "web" in (sb.repo / ".gitfleet.toml").read_text()
    assert "web" not in (sb.repo / ".git/fleet/approved.toml").read_text()
    sb.fleet("list")
    sb.fleet("rm", "web")
    add_again(sb)
    no_leftovers(sb)


def test_killed_while_git_worktree_add_checks_out(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    killed_in_checkout(sb)
    assert (sb.repo / ".git/worktrees/repo-web/locked").exists()  # git's own mark: never finished
    res = add_again(sb)
    assert CLEANED in res.err
    no_leftovers(sb)
    assert (sb.root / "repo-web/src/frontend/slow.txt").read_text() == "slow\n"


def test_any_fleet_command_in_the_main_worktree_cleans_up(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    killed_add(sb, "add-after-worktree")
    res = sb.fleet("list")
    assert CLEANED in res.err
    assert "fleet/web" not in sb.branches() and not (sb.root / "repo-web").exists()
    assert sb.git("worktree", "list").out.count("\n") == 1
    # an agent's command never does it: recovery belongs to the orchestrator
    sb.add_agent("api", "src/backend/**")
    killed_add(sb, "add-after-branch")
    res = sb.fleet("task", "list", cwd=sb.root / "repo-api")
    assert "interrupted" not in res.err and (sb.repo / ".git/fleet/adding").exists()


def test_a_half_checked_out_worktree_with_work_in_it_is_adopted_and_its_checkout_finished(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    killed_in_checkout(sb)
    web = sb.root / "repo-web"
    (web / "src/frontend/app.js").write_text("app(mine)\n")  # written over whatever git had put there
    (web / "notes.txt").write_text("mine\n")
    res = add_again(sb)
    assert "warning: adopted agent 'web'" in res.err
    assert (web / "src/frontend/app.js").read_text() == "app(mine)\n" and (web / "notes.txt").read_text() == "mine\n"
    assert (web / "src/frontend/slow.txt").read_text() == "slow\n" and (web / "README.md").read_text() == "# project\n"
    assert sb.git("status", "--porcelain", cwd=web).out == " M src/frontend/app.js\n?? notes.txt\n"
    trees = sb.git("worktree", "list", "--porcelain").out
    assert "locked" not in trees and not list((sb.repo / ".git/worktrees").rglob("*.lock"))
    assert json.loads(sb.fleet("list", "--json").out)[0]["state"] == "ok"


@pytest.mark.parametrize("work", ["a new file", "a commit"])
def test_a_worktree_with_work_in_it_is_adopted_not_deleted(fleet_repo: Sandbox, work: str) -> None:
    sb = fleet_repo
    killed_add(sb, "add-after-worktree")
    web = sb.root / "repo-web"
    if work == "a new file":
        (web / "src/frontend/new.js").write_text("new()\n")
    else:
        sb.commit(web, {"src/frontend/app.js": "app(2)\n"}, "work in the half-added worktree")
    tip = sb.head("fleet/web")
    res = add_again(sb)
    assert ("warning: adopted agent 'web' (" + str(web) + ", branch fleet/web): an interrupted `git fleet-add` "
            "made it and work was done there since") in res.err
    assert sb.head("fleet/web") == tip
    if work == "a new file":
        assert (web / "src/frontend/new.js").read_text() == "new()\n"
    else:
        assert (web / "src/frontend/app.js").read_text() == "app(2)\n"
    rows = json.loads(sb.fleet("list", "--json").out)
    assert [(r["agent"], r["zone"], r["state"]) for r in rows] == [("web", ["src/frontend/**"], "ok")]
    assert not (sb.repo / ".git/fleet/adding").exists()


def test_killed_at_any_moment(fleet_repo: Sandbox) -> None:
    """A kill loop over the part of the add that makes things (from its record of intent to its
    end): after each kill, one more add succeeds and leaves the fleet clean."""
    sb = fleet_repo
    intent = sb.repo / ".git/fleet/adding"

    def started() -> tuple[subprocess.Popen[str], float]:
        proc = sb.spawn(["git", "fleet-add", "web", *ZONE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not intent.exists() and proc.poll() is None:
            time.sleep(0.001)
        return proc, time.perf_counter()

    spans = []
    for _ in range(3):  # how long the making takes: the shortest of three (a busy machine slows some)
        proc, since = started()
        while intent.exists():
            time.sleep(0.001)
        spans.append(time.perf_counter() - since)
        assert proc.wait() == 0
        sb.fleet("rm", "web")
    span = min(spans)
    rounds, cleaned = 12, 0
    for i in range(rounds):  # two thirds of them while it makes things, the rest after (brief, setup)
        proc, _ = started()
        time.sleep(span * i / 8)
        sb.kill_group(proc)
        if "web" in (sb.repo / ".gitfleet.toml").read_text():  # it got there before the kill
            sb.fleet("list")
        else:
            cleaned += CLEANED in add_again(sb).err
        no_leftovers(sb, doctor=i == rounds - 1)
        sb.fleet("rm", "web")
        assert "fleet/web" not in sb.branches() and not (sb.root / "repo-web").exists()
    assert cleaned >= 3, f"only {cleaned} of {rounds} kills landed while the add was making things"


def test_a_worktree_switched_to_another_branch_since_is_left_alone(fleet_repo: Sandbox) -> None:
    """After the killed add, someone switched its worktree to a branch of their own and worked
    there: nothing of it may be removed."""
    sb = fleet_repo
    killed_add(sb, "add-after-worktree")
    web = sb.root / "repo-web"
    sb.git("switch", "-q", "-c", "experiment", cwd=web)
    (web / "src/frontend/app.js").write_text("an experiment\n")
    (web / "notes.txt").write_text("mine\n")
    res = sb.fleet("add", "docs", "--zone", "docs/**")
    assert f"made {web}, which is on experiment now: it is left as it is" in res.err
    assert (web / "src/frontend/app.js").read_text() == "an experiment\n" and (web / "notes.txt").exists()
    assert "experiment" in sb.branches()
    assert [a["agent"] for a in json.loads(sb.fleet("list", "--json").out)] == ["docs"]


def test_ignored_files_made_since_count_as_work(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.commit(sb.repo, {".gitignore": "build/\n"}, "ignore build output")
    killed_add(sb, "add-after-worktree")
    web = sb.root / "repo-web"
    (web / "build").mkdir()
    (web / "build/out.bin").write_text("an hour of building\n")
    res = add_again(sb)
    assert "adopted agent 'web'" in res.err
    assert (web / "build/out.bin").exists()


def test_a_config_lock_the_killed_add_left_is_removed_and_a_live_one_is_not(fleet_repo: Sandbox) -> None:
    """A kill inside the `git config` that records the worktree leaves .git/config.lock, and every
    later change of the config failed. Nobody holds it open (git keeps its lock open until it
    renames it): the next add removes it and says so. One a live git holds stays, and is named."""
    sb = fleet_repo
    killed_add(sb, "add-after-worktree")
    lock_file = sb.repo / ".git/config.lock"
    lock_file.write_text((sb.repo / ".git/config").read_text())  # as the killed `git config` left it
    res = add_again(sb)
    assert f"warning: removed {lock_file}, left by a git the interrupted add ran" in res.err, res
    assert not lock_file.exists() and sb.git("config", "--get", "fleet-agent.web.worktree").out.strip()
    sb.fleet("rm", "web")

    killed_add(sb, "add-after-worktree")
    holder = sb.spawn(["python3", "-c", "import sys, time; f = open(sys.argv[1], 'w'); print(flush=True); time.sleep(600)",
                       str(lock_file)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "\n"  # it holds the lock open
        res = sb.fleet("add", "web", *ZONE, ok=False)
        assert f"warning: {lock_file} exists: another git process holds it, or one was killed holding it" in res.err, res
        assert lock_file.exists()
    finally:
        sb.kill_group(holder)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root, to look as another user")
def test_a_lock_whose_holders_cannot_be_seen_is_never_called_dead(sandbox: Sandbox, tmp_path: Path) -> None:
    """A user who cannot look into another user's processes cannot tell whether a git of theirs
    holds a lock this other user made: held_open says so (None), and nothing is removed on it."""
    shared = Path(tempfile.mkdtemp(prefix="fleet-shared-", dir="/tmp"))  # (tmp_path is root's alone)
    shared.chmod(0o777)
    lock_file = shared / "config.lock"
    holder = sandbox.spawn(["python3", "-c", "import sys, time; f = open(sys.argv[1], 'w'); print(flush=True); time.sleep(600)",
                            str(lock_file)], cwd=tmp_path, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "\n"
        look = ("from pathlib import Path; from git_fleet.processes import held_open; import sys; "
                "print(held_open(Path(sys.argv[1])))")
        seen = sandbox.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", look,
                            str(lock_file)], cwd=tmp_path, env={"PYTHONPATH": str(Path(__file__).parent.parent)})
        assert seen.out.strip() == "None", seen
        assert sandbox.run([sys.executable, "-c", look, str(lock_file)], cwd=tmp_path).out.strip() == "True"
    finally:
        sandbox.kill_group(holder)
        shutil.rmtree(shared)


def test_a_write_of_the_hooks_killed_midway_leaves_nothing_git_status_shows(fleet_repo: Sandbox) -> None:
    """A kill while the CLIs' settings were being written leaves durable.py's temporary file
    beside them (`test_killed_at_any_moment` met one now and then): info/exclude covers it."""
    sb = fleet_repo
    web = sb.add_agent("web", "src/frontend/**")
    (web / ".claude/.settings.local.json.0a1b2c3d4e5f.tmp").write_text("{")
    assert sb.git("status", "--porcelain", cwd=web).out == ""
    (web / ".claude/other.json").write_text("{}")  # (anything else there is the project's to see)
    assert sb.git("status", "--porcelain", cwd=web).out == "?? .claude/\n"
