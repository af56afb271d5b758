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


def wait(directories: list[Path], timeout: float) -> None:
    libc = _libc()
    if libc is None:
        time.sleep(timeout)
        return
    fd = libc.inotify_init1(_IN_NONBLOCK_CLOEXEC)
    if fd < 0:
        time.sleep(timeout)
        return
    try:
        for d in directories:
            if d.is_dir():
                libc.inotify_add_watch(fd, os.fsencode(d), _IN_EVENTS)
        select.select([fd], [], [], max(0.0, timeout))
    finally:
        os.close(fd)
