"""Which processes work in a directory (the guard before a command replaces or removes a worktree
under someone: an agent started by hand, an editor, a build), and whether any holds a lock file
open (the test that a lock a killed git left is dead)."""

from __future__ import annotations

import os
from pathlib import Path

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "fish", "ksh", "tcsh", "csh"})
IDLE = SHELLS | {"less", "more", "tmux", "screen", "sudo", "su"}  # a shell or pager at its prompt writes nothing


def working_in(where: Path) -> list[str]:
    """Processes whose working directory is in `where`, which could write there (an agent, an
    editor, a build): not this command, what started it or runs beside it (a pipe), nor an idle
    shell or pager. Linux's /proc; elsewhere none is seen. (A process can write there from any
    directory: this is a guard against the usual case.)"""
    mine, pid = set(), os.getpid()
    while pid > 1:  # this command and the processes above it (git, a shell)
        mine.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                pid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    group = os.getpgid(0)
    inside, found = os.path.realpath(where) + os.sep, []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
            with open(f"/proc/{entry.name}/comm", encoding="utf-8", errors="replace") as fh:
                name = fh.read().strip()
            if os.getpgid(int(entry.name)) == group:
                continue  # runs beside this command: `... | less`
        except OSError:
            continue
        if (cwd + os.sep).startswith(inside) and name not in IDLE:
            found.append(f"pid {entry.name} ({name})")
    return found


def held_open(path: Path) -> bool | None:
    """Whether a process (of those /proc shows) has `path` open: git holds a lock file open from
    making it until it renames it into place, so a lock nobody holds is one a killed git left.
    None where /proc cannot tell: no /proc, or a process of the lock's owner whose files cannot
    be seen (hidepid). Other users' processes, which cannot be looked into, are passed over only
    where the lock is this user's: a git of theirs would have made a lock of their own."""
    if not os.path.isdir("/proc"):
        return None
    want = os.path.realpath(path)
    try:
        owner = os.stat(want).st_uid
    except FileNotFoundError:
        return False  # gone: nobody holds it
    except OSError:
        return None  # not this user's to look at
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except FileNotFoundError:
            continue  # ended meanwhile
        except OSError:
            uid = _uid(entry.path)
            if uid is not None and (owner != os.getuid() or uid == owner):
                return None  # it may be the lock's git, and its files cannot be seen
            continue  # ended meanwhile, or another user's, who cannot hold a lock this user made
        with fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) == want:
                        return True
                except OSError:
                    continue  # closed meanwhile
    return False


def _uid(proc: str) -> int | None:
    """The user a process runs as (its /proc entry's owner), None if it is gone."""
    try:
        return os.stat(proc).st_uid
    except OSError:
        return None
