"""A seccomp filter for what Landlock leaves open (ctypes; x86_64): each call below fails with
EPERM in the sandbox, everything else runs as before.

- ioctl TIOCSTI and TIOCLINUX: typing into the terminal, which the shell outside reads as its
  own input (a way to run anything outside);
- socket(..., IPPROTO_MPTCP) and sendto/sendmsg/sendmmsg with MSG_FASTOPEN: TCP connections that
  never call connect(), where Landlock checks the port;
- add_key, keyctl, request_key: the person's keyrings;
- io_uring_setup: a second way into the kernel that seccomp cannot look into;
- the mount API (mount, umount2, pivot_root, mount_setattr, open_tree, move_mount, fsopen, ...):
  the read-only view stays as it was made, even for a process that kept capabilities;
- any x32 system call (a second table of numbers on x86_64).
On another architecture nothing is filtered and `install` says so (the runner refuses then).
"""

from __future__ import annotations

import ctypes
import os
import platform

_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_AUDIT_ARCH_X86_64 = 0xC000003E
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_LD_W_ABS, _JEQ_K, _JSET_K, _RET_K = 0x20, 0x15, 0x45, 0x06
_NR = {"ioctl": 16, "socket": 41, "sendto": 44, "sendmsg": 46, "sendmmsg": 307, "add_key": 248,
       "request_key": 249, "keyctl": 250, "io_uring_setup": 425, "mount": 165, "umount2": 166, "pivot_root": 155,
       "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
       "mount_setattr": 442}
# the mount API: what makes the view read-only (namespaces.py) stays as it was made
MOUNTS = ("mount", "umount2", "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
          "mount_setattr")
TIOCSTI, TIOCLINUX, IPPROTO_MPTCP, MSG_FASTOPEN = 0x5412, 0x541C, 262, 0x20000000
_X32 = 0x40000000


def _arg(n: int) -> int:
    """The offset of the low 32 bits of argument `n` in struct seccomp_data (little-endian)."""
    return 16 + 8 * n


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Filter))]


def program() -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k); jumps are counted from the next instruction."""
    deny = _RET_ERRNO | 1  # EPERM
    # the checks of one call's argument: (syscall, argument, test, value)
    args = [("ioctl", 1, _JEQ_K, TIOCSTI), ("ioctl", 1, _JEQ_K, TIOCLINUX), ("socket", 2, _JEQ_K, IPPROTO_MPTCP),
            ("sendto", 3, _JSET_K, MSG_FASTOPEN), ("sendmsg", 2, _JSET_K, MSG_FASTOPEN),
            ("sendmmsg", 3, _JSET_K, MSG_FASTOPEN)]
    whole = ["add_key", "request_key", "keyctl", "io_uring_setup", *MOUNTS]
    code: list[tuple[int, int, int, int]] = [(_LD_W_ABS, 0, 0, 4)]  # arch
    code.append((_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64))
    code.append((_RET_K, 0, 0, deny))  # (another arch's calls, by number, mean other things: none pass)
    code.append((_LD_W_ABS, 0, 0, 0))  # nr
    code.append((0x35, 0, 1, _X32))  # jge: an x32 call
    code.append((_RET_K, 0, 0, deny))
    for name in whole:
        code.append((_JEQ_K, 0, 1, _NR[name]))
        code.append((_RET_K, 0, 0, deny))
    for name, n, test, value in args:
        # nr == call? then load the argument, test it, deny or reload nr and go on
        code.append((_JEQ_K, 0, 4, _NR[name]))
        code.append((_LD_W_ABS, 0, 0, _arg(n)))
        code.append((test, 0, 1, value))
        code.append((_RET_K, 0, 0, deny))
        code.append((_LD_W_ABS, 0, 0, 0))
    code.append((_RET_K, 0, 0, _RET_ALLOW))
    return code


def supported() -> bool:
    return platform.machine() == "x86_64" and hasattr(os, "O_PATH")


def install() -> None:
    """Filter this process and all it starts (no_new_privs must be set: landlock.restrict sets it)."""
    if not supported():
        raise OSError(f"the sandbox's seccomp filter is written for x86_64, not {platform.machine()}")
    code = program()
    filters = (_Filter * len(code))(*(_Filter(*c) for c in code))
    prog = _Program(len(code), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
