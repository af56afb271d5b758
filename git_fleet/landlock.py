"""Landlock, through its three system calls (ctypes; Linux 5.13 and newer): a process that
restricts itself may from then on write only beneath the directories it names, connect over
TCP only to the ports it names, and reach no abstract Unix socket or process outside its own
domain; it keeps reading and running everything. It cannot be undone, and every process it
starts inherits it. Rights a kernel's ABI does not know are left out (an older kernel gives a
coarser sandbox, never an error); the caller reads the ABI first and refuses what it cannot keep.

Measured on the machines this runs on (ABI 7): what is refused and what is not (a connect() to a
Unix socket *file*, UDP, listen() without bind()) is in tests/test_sandbox.py.
"""

from __future__ import annotations

import ctypes
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

# system call numbers: the generic table's, the same on x86_64 and arm64
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_PR_SET_NO_NEW_PRIVS = 38
_VERSION = 1 << 0  # landlock_create_ruleset(NULL, 0, VERSION): the ABI
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
MAKE_SYM = 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
_FS_NEWEST = (1 << 16) - 1  # ABI 5 and later
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # what a rule on a file may grant
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
_LOG_SAME_EXEC_OFF = 1 << 0  # ABI 7: the agent's refusals are not the audit log's business
MIN_ABI = 6  # what a sandbox needs: scoped abstract sockets and signals (6), TCP ports (4), truncate (3), refer (2)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi() -> int:
    """The Landlock ABI of this kernel; 0 where it has none, or it is switched off."""
    if not hasattr(os, "O_PATH"):
        return 0  # (not Linux)
    found = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_VERSION))
    return int(found) if found > 0 else 0


def _check(result: int) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def restrict(write: Iterable[str], ports: Iterable[int] = (), devices: Iterable[str] = (),
             links: Iterable[str] = ()) -> int:
    """Restrict this process (and all it starts): writes only beneath `write` (directories;
    those missing are skipped) and to `devices` (files: the terminal, /dev/null), TCP connect
    only to `ports` and bind nowhere, in the directories `links` only new symbolic links made
    (none changed or removed: the bus's claims), no abstract Unix socket or signal beyond its own domain.
    Returns the ABI it was done with. Single-threaded callers only: it binds the calling thread."""
    version = abi()
    if version < 1:
        raise OSError("Landlock is not available in this kernel")
    libc = _libc()
    every = _FS_BY_ABI.get(version, _FS_NEWEST)
    read = (EXECUTE | READ_FILE | READ_DIR) & every  # (device ioctls only on its own terminal: `devices`)
    attr = _RulesetAttr(every, NET_BIND_TCP | NET_CONNECT_TCP if version >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if version >= 6 else 0)
    size = 24 if version >= 6 else 16 if version >= 4 else 8
    ruleset = _check(libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)))
    try:
        rules = [("/", read), *((d, every) for d in write), *((d, read | MAKE_SYM) for d in links),
                 *((d, read | ((WRITE_FILE | TRUNCATE | IOCTL_DEV) & every)) for d in devices)]
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                allowed = access if os.path.isdir(path) else access & _FILE_RIGHTS
                rule = _PathBeneathAttr(allowed, fd)
                _check(libc.syscall(_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                                    ctypes.byref(rule), ctypes.c_uint32(0)))
            finally:
                os.close(fd)
        if version >= 4:
            for port in ports:
                net = _NetPortAttr(NET_CONNECT_TCP, port)
                _check(libc.syscall(_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_NET_PORT),
                                    ctypes.byref(net), ctypes.c_uint32(0)))
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            _check(-1)
        _check(libc.syscall(_RESTRICT_SELF, ctypes.c_int(ruleset),
                            ctypes.c_uint32(_LOG_SAME_EXEC_OFF if version >= 7 else 0)))
    finally:
        os.close(ruleset)
    return version
