"""Running a user's command (a checkpoint's test) within limits.

The command runs under a keeper: a small process of its own session (this module, run as
`python -m git_fleet.runner`), which
- starts the command in a process group of its own, so that a time limit ends all of it;
- is a child subreaper (prctl), so that whatever the command leaves behind, even in a session of
  its own (setsid, a double fork), is reparented to the keeper instead of init;
- holds the read end of a pipe whose write end only the starter has: when the starter is gone,
  however it went (SIGKILL of its whole group included: the keeper is in another group), or when
  it closes the pipe to stop the command (its time is up, or it was told to stop), the keeper
  ends the command's group (SIGTERM, then SIGKILL after a grace period);
- ends every process left under it before it exits, when the command ends by itself too;
- exits with the command's status.
The command's output is kept bounded: the last bytes in memory, for the error message, and at
most LOG_LIMIT bytes in a log file.
"""

from __future__ import annotations

import io
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from .errors import FleetError

TAIL_BYTES = 64 * 1024  # kept in memory for the message
TAIL_LINES = 15
LINE_WIDTH = 300  # a line longer than this is cut on screen
LOG_LIMIT = 16 * 1024 * 1024
GRACE = 5.0  # seconds between SIGTERM and SIGKILL when the command is stopped


class Stopped(FleetError):
    """The command was asked to stop (SIGTERM, SIGHUP, SIGINT); `warnings`: about what it did finish."""

    exit_code = 130

    def __init__(self, message: str, hint: str | None = None, warnings: list[str] | None = None):
        super().__init__(message, hint)
        self.warnings = warnings or []


@dataclass
class Outcome:
    code: int | None  # exit status; None when it was stopped (its time was up, or its keeper was killed)
    seconds: float
    tail: list[str]  # its last lines, each at most LINE_WIDTH characters
    log: Path | None  # its output (up to LOG_LIMIT bytes)
    keeper_killed: bool = False  # the keeper died by a signal: the command's group was ended from here

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def timed_out(self) -> bool:
        return self.code is None and not self.keeper_killed


def _tail_lines(chunks: deque[bytes]) -> list[str]:
    text = b"".join(chunks)[-TAIL_BYTES:].decode("utf-8", "replace")
    lines = text.rstrip("\n").split("\n")[-TAIL_LINES:] if text.strip() else []
    return [ln if len(ln) <= LINE_WIDTH else ln[:LINE_WIDTH] + " [line cut]" for ln in lines]


def run(command: str, cwd: Path, env: Mapping[str, str], timeout: float, log: Path | None = None,
        grace: float = GRACE) -> Outcome:
    """Run `sh -c command` in `cwd` under a keeper (see the module's docstring); never raises for the
    command's own failure."""
    started = time.monotonic()
    keeper, write_end, group = _start_keeper(command, cwd, env, grace)
    tail: deque[bytes] = deque()
    out = cast(io.BufferedReader, keeper.stdout)
    reader = threading.Thread(target=_collect, args=(out, log, tail), daemon=True)
    reader.start()
    code: int | None
    try:
        code = keeper.wait(max(0.0, timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        code = None
    finally:
        os.close(write_end)  # time is up, or we were stopped: the keeper ends it all (or it has)
        stuck = False
        try:
            keeper.wait(grace + 30)
        except subprocess.TimeoutExpired:
            keeper.kill()  # a keeper that does not end: the command's group goes below, with it
            keeper.wait()
            stuck = True
        killed = keeper.returncode < 0
        if killed and group:  # the keeper was killed: end what it kept, as far as its group goes
            with suppress(ProcessLookupError, PermissionError):  # the group is gone already (or was never ours)
                os.killpg(group, signal.SIGKILL)
        reader.join(None if not killed else 5)  # with the keeper gone, an escaped process may hold the pipe
        if not reader.is_alive():
            out.close()
    if killed and not stuck:
        return Outcome(None, time.monotonic() - started, _tail_lines(tail), log, keeper_killed=True)
    return Outcome(None if stuck else code, time.monotonic() - started, _tail_lines(tail), log)


def _start_keeper(command: str, cwd: Path, env: Mapping[str, str], grace: float) -> tuple[subprocess.Popen[bytes], int, int]:
    """The keeper started, with the command under it: the keeper, the write end of the pipe that
    keeps the command alive (closing it stops the command), and the command's process group (0:
    the keeper died before it said)."""
    read_end, write_end = os.pipe()  # both close-on-exec: only the keeper gets the read end, as stdin
    said, says = os.pipe()  # the keeper names the command's process group on it
    try:
        # -I: the keeper is git-fleet's own, never a git_fleet/ of the work tree it runs in (-m would
        # put that first on the path), nor one that the user's PYTHON* variables point at
        keeper = subprocess.Popen([sys.executable, "-I", "-m", "git_fleet.runner", str(grace), str(says), command],
                                  cwd=cwd, env=dict(env), stdin=read_end, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, start_new_session=True, pass_fds=(says,))
    finally:
        os.close(read_end)
        os.close(says)
    group = 0  # the command's process group, once the keeper has said it (0: it died first)
    try:
        with os.fdopen(said, "rb") as fh:
            group = int(fh.readline() or 0)
    except BaseException:  # stopped right now: end what was started, then go
        os.close(write_end)
        keeper.wait()
        raise
    return keeper, write_end, group


def _collect(out: io.BufferedReader, log: Path | None, tail: deque[bytes]) -> None:
    """Read the command's output to its end (on a thread of its own): its last TAIL_BYTES or so
    into `tail`, and at most LOG_LIMIT bytes into `log`."""
    kept = written = 0
    with ExitStack() as stack:
        try:
            fh = stack.enter_context(open(log, "wb")) if log is not None else None
        except OSError:
            fh = None  # no log, only the tail
        try:
            while chunk := out.read1(1 << 16):
                tail.append(chunk)
                kept += len(chunk)
                while kept - len(tail[0]) >= TAIL_BYTES:
                    kept -= len(tail.popleft())
                if fh is not None and written < LOG_LIMIT:
                    fh.write(chunk[: LOG_LIMIT - written])
                    written += min(len(chunk), LOG_LIMIT - written)
                    if written >= LOG_LIMIT:
                        fh.write(f"\n[git-fleet: output cut at {LOG_LIMIT // (1024 * 1024)} MiB]\n".encode())
        except (OSError, ValueError):
            pass  # the pipe went away: what was read is what there is


@contextmanager
def raising_on_signals(make: Callable[[int], BaseException]) -> Iterator[None]:
    """For the block, SIGTERM and SIGHUP raise make(signum), so that `finally` clauses run (the
    command's group is ended, scratch worktrees removed) instead of the process just vanishing."""

    def stop(signum: int, _frame: object) -> None:
        raise make(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def stoppable() -> AbstractContextManager[None]:
    """SIGTERM and SIGHUP raise Stopped for the block."""
    return raising_on_signals(lambda signum: Stopped(f"stopped by {signal.Signals(signum).name}; nothing was changed"))


@contextmanager
def deferred() -> Iterator[list[str]]:
    """Let SIGINT, SIGTERM and SIGHUP wait until the block is done, so that a step that must not be
    cut in two is not; yields a list that names the signals that arrived meanwhile. The signals
    are caught (and noted), not blocked: a blocked mask would be inherited by every process
    started meanwhile, hooks' daemons included, which then could not be stopped."""
    arrived: list[str] = []

    def note(signum: int, _frame: object) -> None:
        arrived.append(signal.Signals(signum).name)

    old = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield arrived
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


# -- the keeper ---------------------------------------------------------------------------------

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    """Orphaned descendants come to this process rather than to init (Linux 3.4 and later)."""
    try:
        import ctypes  # (here: only the keeper's own process needs it, not every command that imports this)

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # elsewhere the command's process group is still ended


def _children() -> list[int]:
    me = str(os.getpid()).encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    if fh.read().rsplit(b")", 1)[1].split()[1] == me:
                        found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def _end_all(group: int) -> None:
    """SIGKILL the command's group and every process under the keeper, and reap them, until none
    is left (a killed process's own children are reparented here, and go next): one look at
    /proc a generation of processes, not one a process."""
    while True:
        with suppress(ProcessLookupError, PermissionError):  # the group has ended: what is left are children
            os.killpg(group, signal.SIGKILL)
        for pid in _children():
            with suppress(ProcessLookupError, PermissionError):  # it ended between the look and the kill
                os.kill(pid, signal.SIGKILL)
        try:
            pid, _ = os.waitpid(-1, 0)
            while pid:  # and every other one that has ended meanwhile
                pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return


def keep(grace: float, report: int, command: str) -> int:
    """The keeper's main (see the module's docstring); stdin is the starter's pipe, and the
    command's process group is written to the file descriptor `report`."""
    stop = []
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, lambda signum, _frame: stop.append(signum))
    _become_subreaper()
    child = subprocess.Popen(["sh", "-c", command], stdin=subprocess.DEVNULL, process_group=0)
    with os.fdopen(report, "w") as fh:
        fh.write(f"{child.pid}\n")
    watch = selectors.DefaultSelector()
    watch.register(sys.stdin.fileno(), selectors.EVENT_READ)
    while child.poll() is None and not stop:
        if watch.select(0.05) and not os.read(sys.stdin.fileno(), 1):
            stop.append(0)  # the starter closed the pipe, or is gone
    if child.returncode is None:
        with suppress(ProcessLookupError):  # it ended on its own meanwhile: nothing to stop
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):  # it ended after all, within the grace
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    code = child.returncode
    _end_all(child.pid)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(keep(float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
