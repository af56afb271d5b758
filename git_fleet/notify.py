"""Wait for a change in some directories without busy polling.

Linux inotify (through ctypes: no dependency) wakes the waiter when a file is created, moved in,
written or removed. It is only a hint: the caller rescans after every wake-up and after the
timeout, because inotify misses events on network and some container file systems. Where
inotify is not available, this simply sleeps for the timeout.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import time
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
