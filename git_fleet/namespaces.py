"""A user and mount namespace of the process's own (unprivileged; ctypes), in which the local
servers that would act for it are out of sight: an empty read-only tmpfs over each directory of
their sockets (tmux's, the user's runtime directory: D-Bus, systemd, Wayland), /dev/null over
each socket file (Docker's). The process keeps its uid (mapped to itself), so files it makes are
the person's as before and git's ownership checks hold; the masks are made before Landlock is
applied (landlock.py), which then forbids every later mount and umount, even to a process that
is root in the namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWIPC = 0x00020000, 0x10000000, 0x08000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_SYS_MOUNT_SETATTR, _AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 0x1


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def _check(result: int) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)


def supported() -> str | None:
    """Why an unprivileged user namespace cannot be made here; None when it can (checked by
    making one in a child that does nothing else)."""
    if not hasattr(os, "unshare") and not os.path.exists("/proc/self/ns/user"):
        return "this system has no user namespaces (Linux only)"
    pid = os.fork()
    if pid == 0:  # (the child tries, and says by its exit status)
        code = 1
        try:
            _check(ctypes.CDLL(None, use_errno=True).unshare(_CLONE_NEWUSER | _CLONE_NEWNS))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    limit = "/proc/sys/user/max_user_namespaces"
    try:
        with open(limit, encoding="ascii") as fh:
            zero = fh.read().strip() == "0"
    except OSError:
        zero = False
    return (f"unprivileged user namespaces are switched off ({limit} is 0)" if zero
            else "this kernel refuses an unprivileged user namespace (a distribution setting, or AppArmor)")


def listening_sockets() -> list[str]:
    """The Unix socket files some process listens on now (/proc/net/unix): the local servers,
    known or not, that would act for whoever connects (Landlock does not mediate that connect)."""
    found = []
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="surrogateescape") as fh:
            next(fh, None)  # (the header)
            for line in fh:
                fields = line.rstrip("\n").split(None, 7)
                if len(fields) == 8 and int(fields[3], 16) & 0x10000 and fields[7].startswith("/"):
                    # (flags: __SO_ACCEPTCON, listening; a path, not abstract). A name is anything
                    # its binder chose (a newline and a forged line after it, a symlink put in its
                    # place since): only what is a socket file itself counts
                    try:
                        if stat.S_ISSOCK(os.lstat(fields[7]).st_mode):
                            found.append(fields[7])
                    except OSError:
                        continue
    except OSError:
        pass  # (no /proc: the known places are masked all the same)
    return found


def read_only_but(write: Iterable[str], protect: Iterable[str] = (), shared: Iterable[str] = ()) -> None:
    """Make every mount read-only for this namespace, then what it may write writable again (each
    bound onto itself, its new mount's read-only flag cleared): what Landlock does not mediate
    (chmod, utimes, extended attributes) is then refused everywhere else. In order: the
    directories `shared` (where Landlock lets it only make symbolic links: the bus's), each with
    its `agents/` bound read-only again (the other agents' own directories); the directories
    `write`; each file or directory of `protect`, bound onto itself read-only: it can be neither
    written, nor renamed over or removed (a mount point is busy); then the files `write`. Devices stay writable (a
    read-only mount does not stop a write to /dev/null or a terminal)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def setattr_(path: bytes, attr: _MountAttr) -> None:
        if libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, path, ctypes.c_uint(_AT_RECURSIVE), ctypes.byref(attr),
                        ctypes.c_size_t(ctypes.sizeof(attr))) != 0:
            _check(-1)

    def bind(path: bytes, read_only: bool) -> None:
        _check(libc.mount(path, path, None, _MS_BIND | _MS_REC, None))
        setattr_(path, _MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0) if read_only else _MountAttr(0, _MOUNT_ATTR_RDONLY, 0, 0))

    setattr_(b"/", _MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0))
    for d in shared:
        if os.path.isdir(d) and not os.path.islink(d):
            bind(os.fsencode(d), False)
            agents = os.path.join(d, "agents")
            if os.path.isdir(agents) and not os.path.islink(agents):
                bind(os.fsencode(agents), True)
    for w in write:
        if os.path.isdir(w):
            bind(os.fsencode(w), False)
    for p in protect:
        bind(os.fsencode(p), True)
    for w in write:  # (a file it may write, in a directory protected just now: its git dir's logs/HEAD)
        if os.path.isfile(w):
            bind(os.fsencode(w), False)


_PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 28, 47, 4
# securebits: root is no one special, and that stays so (noroot, no setuid fixup, keep caps: each locked)
_SECURE = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5)
_SYS_CAPSET = 126  # (x86_64, as the seccomp filter)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Give up every capability, for good: the user namespace gave this process all of them over
    its own mounts, and root (uid 0, kept as it is) would keep them across exec. Without them the
    read-only view cannot be made writable again, nor what Landlock leaves to capabilities done
    (chmod or touch of another user's files)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    _check(libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0))
    for cap in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
            _check(-1)  # (EINVAL: beyond the last capability this kernel knows)
    _check(libc.prctl(_PR_SET_SECUREBITS, _SECURE, 0, 0, 0))
    data = (_CapData * 2)()
    _check(libc.syscall(_SYS_CAPSET, ctypes.byref(_CapHeader(0x20080522, 0)), data))


TEMPORARY = ("/tmp", "/var/tmp", "/dev/shm")  # where anyone may make a socket, at any time


def private_temporary(keep: Iterable[str]) -> list[str]:
    """A fresh tmpfs of this namespace's own over each of TEMPORARY, with the directories of
    `keep` beneath them bound back into place as they were (writable or not): a socket that a
    server outside makes there later, in any directory, is out of sight, and what the sandbox
    writes there is its own and goes with it. Returns those it may write: the ones with nothing
    bound back beneath (a right to write a directory reaches beneath it, into what was bound back)."""
    libc = ctypes.CDLL(None, use_errno=True)
    wanted = sorted({os.path.realpath(k) for k in keep if os.path.isdir(k)})
    made = []
    for top in TEMPORARY:
        if os.path.islink(top) or not os.path.isdir(top):
            continue
        inside = [k for k in wanted if k.startswith(top + "/")]
        outermost = [k for k in inside if not any(o != k and k.startswith(o + "/") for o in inside)]
        held = [(k, os.open(k, os.O_PATH | os.O_CLOEXEC)) for k in outermost]  # (before they are covered)
        try:
            _check(libc.mount(b"tmpfs", os.fsencode(top), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=1777"))
            for path, fd in held:
                os.makedirs(path, exist_ok=True)
                _check(libc.mount(f"/proc/self/fd/{fd}".encode(), os.fsencode(path), None, _MS_BIND | _MS_REC, None))
        finally:
            for _, fd in held:
                os.close(fd)
        if not held:
            made.append(top)
    return made


def enter(masks: Iterable[str], keep: Iterable[str] = ()) -> list[str]:
    """Move this process into a new user and mount namespace, keeping its uid and gid, and mask
    each path of `masks` that exists (one ending in / is a directory, made if missing), and every
    Unix socket file listened on now outside `keep` (the sandbox's own directories); the paths
    masked are returned."""
    mine = [os.path.realpath(k).rstrip("/") + "/" for k in keep]
    masks = [*masks, *(p for p in listening_sockets() if not any(os.path.realpath(p).startswith(k) for k in mine))]
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWIPC))  # (IPC: shared memory, queues of its own)
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
    _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None))  # nothing goes back out
    masked = []
    for path in masks:
        if path.endswith("/"):  # a directory a server makes when it starts: made now if missing, so
            path = path.rstrip("/")  # that one started later is hidden too (tmux's, as tmux makes it)
            if not os.path.lexists(path):
                try:
                    os.makedirs(path, mode=0o700)
                except OSError:
                    continue  # (its parent is not this user's to write: no server of this user there)
        if os.path.islink(path):
            continue  # (never mounted over through a link: it could name anything)
        if os.path.isdir(path):
            _check(libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                              b"size=4k,mode=0700"))
        elif os.path.lexists(path):
            _check(libc.mount(b"/dev/null", os.fsencode(path), None, _MS_BIND, None))
        else:
            continue
        masked.append(path)
    return masked
