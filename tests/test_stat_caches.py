"""Caches never decide from a file's time and size that its content is unchanged: a file changed
in place within one timestamp tick keeps both. The commit hook's zone cache is keyed on the
contents it was compiled from; the bus re-reads what was read within a tick of its file time
(git's racy rule). Times are set with os.utime, as a file system with one-second times would."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from git_fleet.bus import Bus
from helpers import Sandbox


def edit_in_place(path: Path, old: str, new: str, mtime_ns: int | None = None) -> None:
    """Rewrite `path` in its own inode, same size, and give it back the time it had (or mtime_ns)."""
    assert len(old) == len(new)
    st = os.stat(path)
    text = path.read_text(encoding="utf-8")
    assert old in text
    with open(path, "r+", encoding="utf-8") as fh:
        fh.write(text.replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, mtime_ns if mtime_ns is not None else st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size, mtime_ns or st.st_mtime_ns)


# -- the commit hook's zone cache ---------------------------------------------------------------------

def test_the_hook_sees_a_same_size_edit_made_in_the_tick_of_git_fleet_set(fleet_repo: Sandbox) -> None:
    """The user's editor saves .gitfleet.toml (in place, same size) while `git fleet-set` is
    between writing it and compiling the zone cache: the cache must not pass off fleet-set's zones
    as the file's. The hook then holds web to the zone the file says."""
    sb = fleet_repo
    web = sb.add_agent("web", "src/frontend/**")
    cfg = sb.repo / ".gitfleet.toml"
    marker = sb.root / "config-written"
    proc = sb.spawn(["git", "fleet-set", "web", "--zone", "src/frontend/**", "--zone", "docs/**"],
                    env={"GIT_FLEET_TEST_PAUSE": "config-written", "GIT_FLEET_TEST_MARKER": str(marker)},
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    edit_in_place(cfg, '"docs/**"', '"dogs/**"')  # the user narrows it back, within the same tick
    marker.unlink()
    assert proc.wait(timeout=60) == 0
    sb.write_files({"docs/guide.md": "# guide, by web\n"}, web)
    sb.git("add", "docs/guide.md", cwd=web)
    res = sb.git("commit", "-qm", "web writes the guide", cwd=web, ok=False)
    assert "error: commit rejected: agent 'web' changed 1 path(s) outside its zone" in res.err
    assert "zone of 'web': src/frontend/**  dogs/**" in res.err


def test_the_hook_sees_a_same_size_edit_with_the_old_time(fleet_repo: Sandbox) -> None:
    """A same-size edit in place that leaves .gitfleet.toml's time as it was (a one-second file
    system, or a restored mtime) still reaches the hook."""
    sb = fleet_repo
    web = sb.add_agent("web", "src/frontend/**", "docs/**")
    sb.commit(web, {"docs/guide.md": "# guide v2\n"}, "web may write the guide")
    edit_in_place(sb.repo / ".gitfleet.toml", '"docs/**"', '"dogs/**"')
    sb.write_files({"docs/guide.md": "# guide v3\n"}, web)
    sb.git("add", "docs/guide.md", cwd=web)
    res = sb.git("commit", "-qm", "no longer", cwd=web, ok=False)
    assert "zone of 'web': src/frontend/**  dogs/**" in res.err


# -- the bus --------------------------------------------------------------------------------------------

@pytest.fixture
def bus(fleet_repo: Sandbox) -> Bus:
    b = Bus(fleet_repo.repo)
    b.ensure()
    return b


def whole_second(ahead: int = 0) -> int:
    """A time as a one-second file system keeps it: this second (or one `ahead` of it, for a file
    time set before a reader that takes a moment to start reads it)."""
    return (time.time_ns() // 10**9 + ahead) * 10**9


@pytest.mark.parametrize("when", [whole_second, time.time_ns], ids=["one-second times", "fine times"])
def test_a_spec_edited_in_place_within_the_tick_it_was_read_in_is_read_again(bus: Bus, when: Callable[[], int]) -> None:
    t = bus.add("Alpha task")
    tick = when()
    os.utime(t.path, ns=(tick, tick))
    assert bus.get(t.id).title == "Alpha task"
    edit_in_place(t.path, "title: Alpha", "title: Omega", tick)
    assert bus.get(t.id).title == "Omega task"


@pytest.mark.parametrize("when", [whole_second, time.time_ns], ids=["one-second times", "fine times"])
def test_a_task_added_within_the_tick_of_the_listing_is_seen(bus: Bus, when: Callable[[], int]) -> None:
    bus.add("First", agent="someone-else")
    tick = when()
    os.utime(bus.tasks, ns=(tick, tick))
    assert bus.claim("web") is None  # lists the tasks directory, and keeps the listing
    other = Bus(bus.root)  # another process, as far as the first one knows
    added = other.add("Second")
    os.utime(bus.tasks, ns=(tick, tick))  # the directory's time did not move within its tick
    claimed = bus.claim("web")
    assert claimed is not None and claimed.id == added.id


def test_a_spec_older_than_a_tick_is_not_read_again(bus: Bus) -> None:
    """What the racy rule keeps of the cache: a spec whose time was settled when it was read is
    parsed once (only os.utime can change it unseen after that, as this test does)."""
    t = bus.add("Alpha task")
    old = time.time_ns() - 10 * 10**9
    os.utime(t.path, ns=(old, old))
    assert bus.get(t.id).title == "Alpha task"
    edit_in_place(t.path, "title: Alpha", "title: Omega", old)
    assert bus.get(t.id).title == "Alpha task"
    assert Bus(bus.root).get(t.id).title == "Omega task"


def waiting_in_select(proc: subprocess.Popen[bytes]) -> bool:
    """Whether a process or one of its descendants sleeps in select/poll (the waiter's wait)."""
    todo, seen = [proc.pid], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    for pid in seen:
        try:
            if "poll" in Path(f"/proc/{pid}/wchan").read_text() or "select" in Path(f"/proc/{pid}/wchan").read_text():
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not os.path.exists("/proc/self/wchan"), reason="needs /proc to see the waiter wait")
def test_claim_wait_claims_a_task_added_within_the_tick_of_its_last_scan(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("web", "src/frontend/**")
    sb.add_agent("api", "src/backend/**")
    sb.fleet("task", "add", "Not for web", "--agent", "api")
    tasks = sb.repo / "tasks"
    tick = whole_second(ahead=2)
    os.utime(tasks, ns=(tick, tick))
    proc = sb.spawn(["git", "fleet-task", "claim", "--wait", "--agent", "web"], stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 30
        while not waiting_in_select(proc):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGSTOP)  # so that it wakes to the task and the time together
        sb.fleet("task", "add", "For anyone")
        os.utime(tasks, ns=(tick, tick))  # the directory's time did not move within its tick
        os.killpg(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            sb.kill_group(proc)
    assert proc.returncode == 0, err
    assert out.startswith("task-002\tFor anyone\t")
    assert "task-002" in sb.fleet("task", "list").out
