"""Durable writes: every state file of the fleet is written by one of three primitives, so that
no reader ever sees half of one (the Maildir rules) and a write that returned survives a crash
of the machine, not only of the process.

- `replace`: a file's whole new contents, at once: written to a temporary name beside it,
  fsynced, renamed over it, and the directory fsynced (config, journal, records, caches, hooks).
- `create`: a file that appears complete, only if its name is free: written and fsynced under a
  temporary name, then link()ed to its name (link fails on an existing name, where a rename would
  overwrite: what keeps the bus's claims and results exactly-once), and the directory fsynced.
  `create_held` is the same create, of a file locked (flock) before it appears.
- `append_line`: a line added at the end of a log that recovery reads (O_APPEND), fsynced; the
  directory too when the file is new.

A file's fsync comes before its rename or link, the directory's after it: the rename cannot
reach the disk before the data it names, and once the call returns the name is there to stay.
The commit hook imports this (check.py writes the zone cache), so it imports only what Python
has loaded at its start anyway.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    PathLike: TypeAlias = "str | os.PathLike[str]"

NEW_MODE = 0o644  # a new file's permissions (the umask aside), unless a caller says otherwise


def replace(path: PathLike, data: str | bytes, *, mode: int | None = None) -> None:
    """Make `path` hold `data` (text is written as UTF-8), all at once and durably. Its mode is
    `mode` if given (a hook's 0o755), else the file's own if it exists, else 0o644."""
    path = os.fspath(path)
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = NEW_MODE
    fd, tmp = _written(path, data, mode)
    try:
        os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    _sync_dir(path)


def create(path: PathLike, data: str | bytes, *, mode: int = NEW_MODE) -> bool:
    """Create `path` holding `data`, complete and durably, only if nothing has that name yet.
    False, with nothing changed, where something has."""
    fd = _link_new(os.fspath(path), data, mode)
    if fd is None:
        return False
    os.close(fd)
    return True


def create_held(path: PathLike, data: str | bytes, *, mode: int = NEW_MODE) -> int | None:
    """`create`, of a file locked (flock, exclusive) before it appears, so that nobody sees it
    unlocked while its creator lives: returns its open descriptor, which holds the lock until it
    is closed; None where the name was taken."""
    import fcntl  # (only git fleet-task rm locks what it creates: the commit hook never pays for it)

    return _link_new(os.fspath(path), data, mode, lambda fd: fcntl.flock(fd, fcntl.LOCK_EX))


def append_line(path: PathLike, line: str) -> None:
    """Add `line` (its newline added where it has none) at the end of `path`, made if need be,
    and fsync it (and its directory, when the file is new)."""
    path = os.fspath(path)
    data = (line if line.endswith("\n") else line + "\n").encode("utf-8")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
    try:
        fd, created = os.open(path, flags), False
    except FileNotFoundError:
        fd, created = os.open(path, flags | os.O_CREAT, NEW_MODE), True
    try:
        if created:
            os.fchmod(fd, NEW_MODE)  # (as the other two make a file: whatever the umask)
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _sync_dir(path)


# -- the parts ---------------------------------------------------------------------------------

def symlink(target: str, path: PathLike) -> bool:
    """Make the symlink `path` -> `target` if its name is free, and the name durable; False if
    it is taken (a symlink's target is fixed when it is made: nothing to write before)."""
    try:
        os.symlink(target, path)
    except FileExistsError:
        return False
    _sync_dir(os.fspath(path))
    return True


def _written(path: str, data: str | bytes, mode: int) -> tuple[int, str]:
    """A temporary file beside `path` (hidden: .NAME.RANDOM.tmp) holding `data` with `mode`,
    fsynced: its open descriptor and its name. Nothing is left where this fails."""
    head, name = os.path.split(path)
    while True:
        tmp = os.path.join(head, f".{name}.{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            break
        except FileExistsError:
            continue  # (another writer drew the same name: draw again)
    try:
        _fill(fd, data, mode)
    except BaseException:
        os.close(fd)
        _discard(tmp)
        raise
    return fd, tmp


def _fill(fd: int, data: str | bytes, mode: int) -> None:
    """`data` written whole into the new file `fd`, exactly `mode` (whatever the umask), fsynced."""
    _write_all(fd, data.encode("utf-8") if isinstance(data, str) else data)
    os.fchmod(fd, mode)
    os.fsync(fd)


def _unnamed(path: str, data: str | bytes, mode: int) -> int | None:
    """A file with no name yet (O_TMPFILE) in `path`'s directory holding `data` with `mode`,
    fsynced; None where the file system or the system has none."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        fd = os.open(os.path.dirname(path) or ".", flag | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        return None  # (a file system without it: the named way)
    try:
        _fill(fd, data, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _link_new(path: str, data: str | bytes, mode: int, before: Callable[[int], None] | None = None) -> int | None:
    """The exclusive create: the new file's descriptor once it is linked at `path` (`before`
    called on it first) and the directory fsynced; None if `path` exists. Made with no name
    (O_TMPFILE) where it can be, so that linking it at `path` is the last change of its inode:
    its ctime says when its name appeared, and stays (the bus orders its records so)."""
    fd = _unnamed(path, data, mode)
    if fd is not None:
        try:
            if before is not None:
                before(fd)
            # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N: how a file with no name gets one
            procfd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.link(str(fd), path, src_dir_fd=procfd, follow_symlinks=True)
            finally:
                os.close(procfd)
        except FileExistsError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)  # (a system that will not link it: the named way, below)
        except BaseException:
            os.close(fd)
            raise
        else:
            _sync_dir(path)
            return fd
    fd, tmp = _written(path, data, mode)
    try:
        if before is not None:
            before(fd)
        os.link(tmp, path)
    except BaseException as e:
        os.close(fd)
        _discard(tmp)
        if isinstance(e, FileExistsError):
            return None
        raise
    try:
        _discard(tmp)
        _sync_dir(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _discard(tmp: str) -> None:
    # (not contextlib.suppress: importing it, 10 modules, is 2.5 ms of every hook's start)
    try:  # noqa: SIM105
        os.unlink(tmp)
    except FileNotFoundError:
        pass  # renamed away


def _sync_dir(path: str) -> None:
    """fsync the directory that holds `path`, so that a name just made or changed there stays.
    A file system that cannot sync a directory (some network ones) keeps it as well as it can."""
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)
