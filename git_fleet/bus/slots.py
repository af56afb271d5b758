"""Claims by agents that may write only their own directories.

An agent A writes its records in `tasks/.state/agents/A/` (claims, renewals, ends) and its results
in `results/agents/A/`, and makes each public by a symlink in `tasks/.state/` or `results/`: a
name anyone may create, once, and nobody may change or delete. A symlink counts only in its exact
shape, `task-N.claim-K -> agents/A/task-N.claim-K`, read with lstat and readlink, never followed:
its record is opened component by component without following a link, and must be a regular file
in a real directory of A, saying A, task N and attempt K. Anything else is junk: it takes a
number and counts for nothing, and the next number is taken instead.

Which attempt holds a task is decided in the order the attempts were made (`made`: the later of
the slot's birth time, which nothing changes once the slot is made, and its record's change
time, ctime, which only its own agent can move, and only forward; the slot's own ctime would not
do: anyone may touch a symlink in a shared directory): an attempt counts if, when it was made,
the one holding the task was its own agent's, or had lapsed (or was released) by then, by the
renewals made before then. A renewal is a new file (`task-N.claim-K.lease-M`) that counts if
it was made while the lease held; a release renames the record away, so that no later writing
can bring it back as it was. An end (done,
failed) is an attempt too, of its holder, made while its lease held; the first end ends the task.
Regular files in tasks/.state/ are the orchestrator's (and an older version's): trusted as ever.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import durable

AGENTS = "agents"
AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SLOT = re.compile(r"^(task-\d+)\.claim-(\d+)$")
SETTLE = 0.1  # seconds past a lease before it is taken over: the kernel stamps ctime with a coarse clock
MAX_RECORD = 1 << 16


@dataclass
class Attempt:
    """One numbered attempt at a task, as its files say."""
    number: int
    agent: str | None
    expires: float
    made: int = 0  # ns: when the slot or its record last changed, at the latest
    title: str = ""
    trusted: bool = False  # a regular file: the orchestrator's, or an older version's claim
    released: bool = False
    removed: bool = False  # rm's claim (live while rm runs)
    ends: int | None = None  # an end: the attempt it ends (0 for the orchestrator's cancel)
    status: str | None = None  # an end's: done, failed, cancelled
    result: Path | None = None  # an end's result file
    leases: list[tuple[int, float]] = field(default_factory=list)  # (ctime ns, expires) of renewals
    record: dict[str, Any] = field(default_factory=dict)

    def expiry_at(self, t: int) -> float:
        """The lease's end by the renewals made before `t` (ns), each made while the lease held."""
        end = self.expires
        for ctime, expires in self.leases:
            if ctime <= t and ctime < end * 1e9:
                end = max(end, expires)
        return end

    def live_at(self, t: int) -> bool:
        return not self.released and self.expiry_at(t) * 1e9 > t

    def live(self) -> bool:
        return self.live_at(time.time_ns())


# -- reading ----------------------------------------------------------------------------------------

def open_beneath(base: Path, *parts: str, directory: bool = False) -> int:
    """An open descriptor of base/parts..., following no symlink on the way (OSError if one is
    there): each part a real directory, the last a regular file (or a directory)."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            if not last or directory:
                flags |= os.O_DIRECTORY
            nxt = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
        if not directory and not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_beneath(base: Path, *parts: str) -> tuple[bytes, os.stat_result]:
    fd = open_beneath(base, *parts)
    try:
        st = os.fstat(fd)
        data = os.read(fd, MAX_RECORD)
        return data, st
    finally:
        os.close(fd)


class _StatxTime(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32), ("reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    _fields_ = [("mask", ctypes.c_uint32), ("blksize", ctypes.c_uint32), ("attributes", ctypes.c_uint64),
                ("nlink", ctypes.c_uint32), ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32),
                ("mode", ctypes.c_uint16), ("spare0", ctypes.c_uint16), ("ino", ctypes.c_uint64),
                ("size", ctypes.c_uint64), ("blocks", ctypes.c_uint64), ("attributes_mask", ctypes.c_uint64),
                ("atime", _StatxTime), ("btime", _StatxTime), ("ctime", _StatxTime), ("mtime", _StatxTime),
                ("spare", ctypes.c_uint64 * 18)]


_STATX_BTIME, _AT_SYMLINK_NOFOLLOW, _AT_FDCWD = 0x800, 0x100, -100
_libc = ctypes.CDLL(None, use_errno=True)


def birth_ns(path: Path) -> int:
    """When the file at `path` (a symlink itself, not followed) was made, in ns: its birth time,
    which neither touch, chown nor a hard link changes; its ctime where the file system keeps
    no birth time (then a process that may touch the file can move it forward)."""
    buf = _Statx()
    if getattr(_libc, "statx", None) is not None and _libc.statx(
            _AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, _STATX_BTIME, ctypes.byref(buf)) == 0 \
            and buf.mask & _STATX_BTIME:
        return int(buf.btime.tv_sec) * 1_000_000_000 + int(buf.btime.tv_nsec)
    return os.lstat(path).st_ctime_ns


def changed_ns(st: os.stat_result) -> int:
    """When the file `st` describes last changed (its ctime), in ns: a record's in its agent's own
    directory, which only that agent can move, and only forward."""
    return st.st_ctime_ns


def agent_of(target: str, name: str) -> str | None:
    """The agent a slot's target names, if it has exactly the shape agents/AGENT/NAME."""
    parts = target.split("/")
    if len(parts) == 3 and parts[0] == AGENTS and parts[2] == name and AGENT_NAME.match(parts[1]) \
            and ".." not in parts[1]:
        return parts[1]
    return None


def read_slot(state: Path, name: str, task: str, number: int, is_link: bool) -> Attempt | None:
    """The attempt slot `name` of `task` in `state` (tasks/.state/) stands for, or None (junk)."""
    path = state / name
    try:
        if not is_link:
            data, st = read_beneath(state, name)
            record = json.loads(data)
            # (its ctime is when its name appeared, durable.create; its birth may be before an attempt made first)
            return _trusted(record, number, changed_ns(st))
        target = os.readlink(path)
        agent = agent_of(target, name)
        if agent is None:
            return None
        made = birth_ns(path)
        data, st = read_beneath(state, AGENTS, agent, name)
        record = json.loads(data)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("agent") != agent or record.get("task") != task \
            or record.get("attempt") != number:
        return None
    try:
        a = Attempt(number, agent, float(record.get("expires", 0)), max(made, changed_ns(st)),
                    str(record.get("title") or ""), record=record)
        if "ends" in record:
            a.ends, a.status = int(record["ends"]), str(record.get("status"))
            if a.status not in ("done", "failed"):
                return None
        else:
            a.leases = _leases(state / AGENTS / agent, name)
    except (TypeError, ValueError):
        return None
    return a


def _trusted(record: Any, number: int, made: int) -> Attempt | None:
    if not isinstance(record, dict):
        return None
    try:
        a = Attempt(number, record.get("agent"), float(record.get("expires", 0) or 0), made,
                    str(record.get("title") or ""), trusted=True, released=bool(record.get("released")),
                    removed=bool(record.get("removed")), record=record)
    except (TypeError, ValueError):
        return None
    if record.get("ends") == "cancelled":
        a.ends, a.status = 0, "cancelled"
    return a


def _leases(directory: Path, name: str) -> list[tuple[int, float]]:
    """The renewals of claim `name`: lease-1, lease-2, ... until one is missing."""
    found: list[tuple[int, float]] = []
    for m in range(1, 100_000):
        try:
            data, st = read_beneath(directory, f"{name}.lease-{m}")
            found.append((changed_ns(st), float(json.loads(data)["expires"])))
        except FileNotFoundError:
            break
        except (OSError, ValueError, KeyError, TypeError):
            continue  # (one its agent spoiled: it counts for nothing)
    return sorted(found)


def released_trace(state: Path, name: str, target: str) -> Attempt | None:
    """The record of a released claim (renamed to NAME.released): who held it, for the history."""
    agent = agent_of(target, name)
    if agent is None:
        return None
    try:
        data, _ = read_beneath(state, AGENTS, agent, f"{name}.released")
        record = json.loads(data)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("agent") != agent:
        return None
    return Attempt(int(record.get("attempt", 0) or 0), agent, 0.0, title=str(record.get("title") or ""),
                   released=True, record=record)


@dataclass
class Scan:
    """One look at the bus: each task's attempt slots (number, name, is a symlink) in tasks/.state/,
    and the names in results/ (True for a regular file)."""
    slots: dict[str, list[tuple[int, str, bool]]] = field(default_factory=dict)
    results: dict[str, bool] = field(default_factory=dict)


def scan(state: Path, results: Path, only: str | None = None) -> Scan:
    """The bus as two listings; `only`: of that task alone (its names in tasks/.state/, one lstat)."""
    found = Scan()
    prefix = f"{only}.claim-" if only is not None else ""
    try:
        with os.scandir(state) as it:
            for entry in it:
                if not entry.name.startswith(prefix):
                    continue
                m = SLOT.match(entry.name)
                if m:
                    found.slots.setdefault(m.group(1), []).append((int(m.group(2)), entry.name, entry.is_symlink()))
    except OSError:
        pass
    if only is not None:
        name = f"{only}-result.md"
        with contextlib.suppress(OSError):  # (none there)
            found.results = {name: stat.S_ISREG(os.lstat(results / name).st_mode)}
        return found
    try:
        with os.scandir(results) as it:
            found.results = {e.name: e.is_file(follow_symlinks=False) for e in it}
    except OSError:
        pass
    return found


def removing(path: Path) -> bool:
    """Whether the rm that made the claim at `path` still runs: it holds the claim file
    flocked from before the file appeared until it has decided, and the kernel drops the lock
    when rm ends, however it ends."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


# -- the walk -----------------------------------------------------------------------------------------

@dataclass
class Chain:
    holder: Attempt | None = None  # the attempt that holds the task (live or lapsed)
    end: Attempt | None = None  # the end that ended it, if any
    history: list[Attempt] = field(default_factory=list)  # every attempt that counted, and released ones
    numbers: set[int] = field(default_factory=set)  # every number taken, junk too


def walk(attempts: list[Attempt]) -> Chain:
    """Which attempts count, in the order they were made (see the module's note)."""
    chain = Chain()
    for a in sorted(attempts, key=lambda a: (a.made, a.number)):
        cur = chain.holder
        if a.ends is not None:
            if a.trusted or (cur is not None and cur.agent is not None and cur.agent == a.agent
                             and cur.number == a.ends and cur.live_at(a.made)):
                chain.end = a
                return chain
            continue
        if a.trusted:
            if a.removed and a.released:
                continue  # a rm killed before it decided: nothing
            chain.holder = a
            if not a.removed:
                chain.history.append(a)
            continue
        if cur is None or (cur.agent == a.agent and not cur.removed) or not cur.live_at(a.made):
            chain.holder = a
            chain.history.append(a)
    return chain


def read_chain(state: Path, name: str, entries: list[tuple[int, str, bool]],
               removing: Callable[[str, int], bool]) -> Chain:
    """The chain of task `name` from its slots (number, file name, is a symlink) in `state`;
    `removing(name, number)` tells whether the rm that made a claim still runs."""
    attempts, traces, numbers = [], [], set()
    for number, entry, is_link in entries:
        numbers.add(number)
        a = read_slot(state, entry, name, number, is_link)
        if a is None:
            try:
                trace = released_trace(state, entry, os.readlink(state / entry)) if is_link else None
            except OSError:
                trace = None
            if trace is not None:
                trace.number = number
                traces.append(trace)
            continue
        if a.trusted and a.removed and not a.released:
            a.released = not removing(name, number)  # (a rm killed before it decided: nothing)
        attempts.append(a)
    chain = walk(attempts)
    chain.numbers = numbers
    chain.history = sorted(chain.history + traces, key=lambda a: a.number)
    return chain


def next_number(chain: Chain) -> int:
    """The number a new attempt takes: the first free one above every attempt that counts."""
    n = max([a.number for a in chain.history] + [chain.holder.number if chain.holder else 0], default=0) + 1
    while n in chain.numbers:
        n += 1
    return n


# -- writing ----------------------------------------------------------------------------------------

def agent_writes(state: Path, results: Path, agent: str) -> tuple[list[Path], list[Path]]:
    """Store.agent_writes: (tasks/.state/agents/A and results/agents/A, each made a real directory;
    tasks/.state and results). The sandbox lets the agent create, change and delete anything
    beneath the first two, and in the last two create symlinks only: no regular file, directory,
    rename or deletion. (A hard link of a symlink, which Landlock's right to make symlinks allows,
    or a touch moves its ctime, not its birth time, by which attempts are ordered.) Symlinks it
    makes beneath the others' directories count for nothing."""
    own = [state / AGENTS / agent, results / AGENTS / agent]
    for d in own:
        real_dir(d)
    return own, [state, results]


def create_own(path: Path, data: str) -> None:
    """A record, written once, in the agent's own directory: whatever had its name there (a record
    of an attempt that never counted, or a symlink another agent made beneath the shared
    directory) is the agent's to remove."""
    while not durable.create(path, data):
        path.unlink(missing_ok=True)


def real_dir(d: Path) -> None:
    """Make `d` a real directory; a symlink squatting its name (an agent's junk) is removed first."""
    if os.path.islink(d) or (os.path.lexists(d) and not d.is_dir()):
        d.unlink()
    d.mkdir(parents=True, exist_ok=True)


def own_dir(base: Path, agent: str, ensure: Callable[[], None]) -> Path:
    """The agent's own directory under `base` (tasks/.state/ or results/), a real one, made if
    need be (after `ensure()`), where this process may: a sandboxed agent's is made before it starts."""
    if not AGENT_NAME.match(agent) or ".." in agent:
        raise ValueError(f"'{agent}' cannot name a directory")
    d = base / AGENTS / agent
    try:
        os.close(open_beneath(base, AGENTS, agent, directory=True))
    except OSError:  # (missing, or a link or file squatting its name: replaced, where this process may)
        ensure()
        real_dir(d)
        os.close(open_beneath(base, AGENTS, agent, directory=True))
    return d
