"""Scratch space under <common dir>/fleet/scratch: a directory for each command that needs one
(private index files, a checkpoint test's worktree, a directory made aside and renamed into
place), removed when the command is done.

A command holds a lock (flock) on its space's owner file, NAME.owner beside the directory NAME,
for as long as it runs (a git it started that outlives it writes into a space that may be gone:
it fails, and nothing is lost, as its command is gone). The owner
file is locked before it gets its name and before the directory exists, so a space whose owner
file can be locked by someone else belongs to a command that is gone: `leftovers` finds such
spaces and nothing else, so a live command's space is never taken from under it, whoever cleans
up and whenever.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from . import plumbing

PREFIX = "p-"
OWNER = ".owner"


def root(common_dir: Path) -> Path:
    """<common dir>/fleet/scratch; in a sandboxed agent, its own (FLEET_SCRATCH, which the
    sandbox sets: the shared one holds the orchestrator's merges, which no agent may touch)."""
    own = os.environ.get("FLEET_SCRATCH")
    return Path(own) if own else common_dir / "fleet" / "scratch"


@contextmanager
def space(common_dir: Path) -> Iterator[Path]:
    """A directory of this command's own, under the scratch root; removed afterwards."""
    top = root(common_dir)
    top.mkdir(parents=True, exist_ok=True)
    while True:
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        unnamed = top / f".{name}{OWNER}"
        fd = os.open(unnamed, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.rename(unnamed, top / f"{name}{OWNER}")
            break
        except FileNotFoundError:
            os.close(fd)  # a cleaner took it for a dead one's between the create and the lock
    where = top / name
    where.mkdir()
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)
        with suppress(FileNotFoundError):  # never made, or cleaned up already: gone either way
            os.unlink(top / f"{name}{OWNER}")
        os.close(fd)


def _free(owner: Path) -> bool:
    """Whether nobody holds the lock on an owner file (its command is gone)."""
    try:
        fd = os.open(owner, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # gone meanwhile: its command is done with it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def leftovers(common_dir: Path) -> list[Path]:
    """What killed commands left under the scratch root: spaces (with their owner files) whose
    command is gone, owner files not yet named, and what an older git-fleet put there directly."""
    top = root(common_dir)
    if not top.is_dir():
        return []
    entries = list(top.iterdir())
    owners = {p.name for p in entries if p.name.endswith(OWNER)}
    found = []
    for p in entries:
        if p.name.endswith(OWNER):
            if _free(p):
                found.append(p)
                if p.name.startswith(PREFIX):
                    found.append(top / p.name.removesuffix(OWNER))
        elif not p.name.startswith(PREFIX):
            found.append(p)  # an older git-fleet's
        elif f"{p.name}{OWNER}" not in owners and not (top / f"{p.name}{OWNER}").exists():
            found.append(p)  # a space whose owner file a cleaner took (looked at again: a listing is no snapshot)
    return list(dict.fromkeys(found))


def remove(common_dir: Path, found: list[Path]) -> None:
    """Remove leftovers: worktrees git has registered there first (their records included, even
    one `git worktree add` left locked when it was killed), then the rest."""
    admin_root = common_dir / "worktrees"
    for admin in admin_root.glob("*") if admin_root.is_dir() else ():
        link = plumbing.read_file(str(admin / "gitdir")) or ""
        if any(link.startswith(str(p) + os.sep) for p in found if p.is_dir()):
            plumbing.git(["worktree", "remove", "--force", "--force", os.path.dirname(link)], common_dir, check=False)
            shutil.rmtree(admin, ignore_errors=True)
    for p in sorted(found, key=lambda p: p.name.endswith(OWNER)):  # a space before its owner file
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with suppress(FileNotFoundError):  # another command's clean-up took it first
                p.unlink()
