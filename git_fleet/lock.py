"""The fleet's lock: one flock on <common dir>/fleet/lock, held by every command that changes the
fleet (config edits, merges, syncs) and tried, never waited for, by recovery.

flock is released by the kernel when its holder ends, however it ends, so a killed command
leaves no stale lock behind. While a branch moves (moves.py), the git processes of the move
inherit the lock: a command killed while its git runs on (a read-tree writing files) keeps the
lock until that git is done too, so recovery never works beside it. The holder writes who it is
into the file, so that a command that has to wait can say what it waits for.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from .gateway import plumbing


def _path(common_dir: Path) -> Path:
    return common_dir / "fleet" / "lock"


_held: dict[Path, int] = {}  # the lock's file descriptor while this process holds it


def lent_to_git(common_dir: Path) -> AbstractContextManager[None]:
    """Within the block, the git processes this command starts hold the lock with it (they inherit
    it): a command killed while its git moves a branch or writes a work tree keeps the lock until
    that git has ended too, so recovery never works beside it. Only there: a git's hook that
    leaves a process behind (a daemon) would hold the lock as long as that lives."""
    fd = _held.get(common_dir)
    return plumbing.inherit(fd) if fd is not None else nullcontext()


def holder(common_dir: Path) -> str:
    """Who holds (or last held) the lock, as its holder wrote it: "pid N: command"; where that
    process is gone, also which processes hold the lock now (it was lent to a git of it, and
    that git, or something it started, lives on)."""
    try:
        said = _path(common_dir).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    pid = said.removeprefix("pid ").split(":", 1)[0]
    if not pid.isdigit() or os.path.exists(f"/proc/{pid}") or not os.path.isdir("/proc"):
        return said
    target = str(_path(common_dir))
    held = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if any(os.readlink(f"/proc/{entry.name}/fd/{fd}") == target for fd in os.listdir(f"/proc/{entry.name}/fd")):
                    with open(f"/proc/{entry.name}/comm", encoding="utf-8", errors="replace") as fh:
                        held.append(f"pid {entry.name} ({fh.read().strip()})")
            except OSError:
                continue
    return f"{said}, which is gone; held now by " + (", ".join(held) or "a process this user cannot see")


def _claim(fd: int) -> None:
    """Say who holds the lock (for anyone who has to wait for it)."""
    command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {command}\n".encode("utf-8", "replace"), 0)


def _open(common_dir: Path) -> int:
    path = _path(common_dir)
    path.parent.mkdir(exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


@contextmanager
def hold(common_dir: Path, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock for the block; if another command holds it, say so through `waiting`
    (once) and wait for it."""
    fd = _open(common_dir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting(holder(common_dir) or "another git fleet command")
            fcntl.flock(fd, fcntl.LOCK_EX)
        _claim(fd)
        _held[common_dir] = fd
        yield
    finally:
        _held.pop(common_dir, None)
        os.close(fd)  # releases the lock (once the git processes it was lent to are gone too)


@contextmanager
def attempt(common_dir: Path) -> Iterator[bool]:
    """Hold the lock for the block if nobody else does; yields whether it is held."""
    try:
        fd = _open(common_dir)
    except OSError:
        yield False  # a repository this user cannot write: nothing to recover from here
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        _claim(fd)
        _held[common_dir] = fd
        yield True
    finally:
        _held.pop(common_dir, None)
        os.close(fd)
