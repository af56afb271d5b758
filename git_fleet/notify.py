"""Wait for a change in some directories without busy polling.

Linux inotify (through ctypes: no dependency) wakes the waiter when a file is created, moved in,
written or removed. It is only a hint: the caller rescans after every wake-up and after the
timeout, because inotify misses events on network and some container file systems. Where
inotify is not available, this simply sleeps for the timeout.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import time
from collections.abc import Iterable
from pathlib import Path

_IN_EVENTS = 0x00000008 | 0x00000080 | 0x00000100 | 0x00000200 | 0x00000040  # close_write, moved_to, create, delete, moved_from
_IN_NONBLOCK_CLOEXEC = 0o4000 | 0o2000000


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1  # noqa: B018 - present on Linux only
        return libc
    except (OSError, AttributeError):
        return None


class Watcher:
    """Watch directories from before the first scan until the last, so that a change made between
    a scan and the wait still wakes the waiter (events queue up in the inotify descriptor)."""

    def __init__(self, directories: list[Path]):
        self.fd = -1
        libc = _libc()
        if libc is not None:
            self.fd = libc.inotify_init1(_IN_NONBLOCK_CLOEXEC)
            if self.fd >= 0:
                for d in directories:
                    if d.is_dir():
                        libc.inotify_add_watch(self.fd, os.fsencode(d), _IN_EVENTS)

    def wait(self, timeout: float) -> None:
        if self.fd < 0:
            time.sleep(timeout)
            return
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if ready:
            try:
                while os.read(self.fd, 65536):
                    pass  # drain: the caller rescans anyway
            except BlockingIOError:
                pass  # drained: the events only say "look again"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_IN_ATTRIB, _IN_ISDIR, _IN_Q_OVERFLOW, _IN_IGNORED = 0x00000004, 0x40000000, 0x00004000, 0x00008000
_IN_CREATE, _IN_MOVED_TO = 0x00000100, 0x00000080
# directories a worktree's watch skips: git's own, and what projects ignore and tools churn (a
# change there changes no status), so that a watch leaves the user's inotify watches to others
SKIPPED = frozenset({b".git", b"node_modules", b"__pycache__", b".venv", b".mypy_cache", b".pytest_cache",
                     b".ruff_cache", b".tox"})


def _user_watches() -> int:
    """The user's inotify watches (fs.inotify.max_user_watches; 8192 on older kernels)."""
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 8192


_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
EVERYTHING = "*"  # the key drain() returns when events were lost (the queue overflowed)


class Events:
    """Which of many watched directories changed, each watch under a key the caller chose; the
    live screen's source of refreshes. Like Watcher, a hint: a caller still looks again now and
    then. `budget` caps the watches (a directory each), far below the user's inotify limit."""

    def __init__(self, budget: int = 50_000):
        self.fd, self.budget = -1, min(budget, _user_watches() // 4)
        self._libc = _libc()
        # wd -> (key, the names wanted (None: all), what a recursive watch skips (None: not recursive))
        self._keys: dict[int, list[tuple[str, frozenset[str] | None, frozenset[bytes] | None]]] = {}
        self._paths: dict[int, str] = {}
        self.failed: set[str] = set()  # keys a directory of which could not be watched when it came
        if self._libc is not None:
            self.fd = self._libc.inotify_init1(_IN_NONBLOCK_CLOEXEC)

    def add(self, path: Path, key: str, names: Iterable[str] | None = None, recursive: bool = False,
            skip: frozenset[bytes] = SKIPPED) -> bool:
        """Watch directory `path` (and, `recursive`, every directory beneath it, also those made or
        moved in later, but those named in `skip`) for changes to any file, or only to the `names`
        given. False if it cannot be watched whole (no inotify, gone, out of watches, over the
        budget): the caller then looks at it on a timer."""
        if self.fd < 0 or self._libc is None:
            return False
        todo, wanted = [os.fsencode(path)], frozenset(names) if names is not None else None
        while todo:
            d = todo.pop()
            if len(self._paths) >= self.budget:
                return False
            wd = self._libc.inotify_add_watch(self.fd, d, _IN_EVENTS | _IN_ATTRIB)
            if wd < 0:
                if d == os.fsencode(path) or ctypes.get_errno() == errno.ENOSPC:
                    return False  # (out of the user's watches: a part unwatched is no watch)
                continue  # (a directory gone meanwhile, or one this user cannot read)
            if (key, wanted, skip if recursive else None) not in self._keys.setdefault(wd, []):
                self._keys[wd].append((key, wanted, skip if recursive else None))
            self._paths[wd] = os.fsdecode(d)
            if recursive:
                try:
                    with os.scandir(d) as it:
                        todo += [e.path for e in it if e.is_dir(follow_symlinks=False) and e.name not in skip]
                except OSError:
                    pass
        return True

    def drain(self) -> set[str]:
        """The keys of the events queued now, without waiting."""
        keys: set[str] = set()
        while True:
            try:
                raw = os.read(self.fd, 65536)
            except (BlockingIOError, OSError):
                return keys
            at = 0
            while at + _EVENT.size <= len(raw):
                wd, mask, _cookie, size = _EVENT.unpack_from(raw, at)
                name = raw[at + _EVENT.size: at + _EVENT.size + size].rstrip(b"\0").decode("utf-8", "replace")
                at += _EVENT.size + size
                if mask & _IN_Q_OVERFLOW:
                    keys.add(EVERYTHING)
                    continue
                if wd not in self._keys:
                    continue
                if mask & _IN_IGNORED:
                    del self._keys[wd]
                    self._paths.pop(wd, None)
                    continue
                for key, names, skip in list(self._keys[wd]):
                    if names is None or name in names:
                        keys.add(key)
                    if skip is not None and mask & _IN_ISDIR and mask & (_IN_CREATE | _IN_MOVED_TO) \
                            and os.fsencode(name) not in skip \
                            and not self.add(Path(self._paths[wd], name), key, recursive=True, skip=skip):
                        self.failed.add(key)  # (a directory that cannot be watched: its key on a timer)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
