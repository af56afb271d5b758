"""Running a user's command (a checkpoint's test) within limits.

- It runs in a process group of its own, so that a time limit ends all of it, grandchildren too.
- It cannot outlive the process that started it, however that process ends (SIGKILL of its whole
  group included): a watchdog in the command's group holds the read end of a pipe whose write
  end only the starter has; when the starter is gone the read returns and the watchdog kills
  the group, itself with it. The same happens when the starter closes the pipe on purpose, so
  nothing the command left running in the background survives it either.
- Its output is kept bounded: the last bytes in memory, for the error message, and at most
  LOG_LIMIT bytes in a log file.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from .errors import FleetError

TAIL_BYTES = 64 * 1024  # kept in memory for the message
TAIL_LINES = 15
LINE_WIDTH = 300  # a line longer than this is cut on screen
LOG_LIMIT = 16 * 1024 * 1024
GRACE = 5.0  # seconds between SIGTERM and SIGKILL when time is up

# sh: deaf to the signals that end the command, it waits for the starter to go (or to close the
# pipe), then ends its whole group, itself included
WATCHDOG = 'trap "" TERM HUP INT; read _; kill -KILL 0'


class Stopped(FleetError):
    """The starter was asked to stop (SIGTERM, SIGHUP) while a command ran."""

    exit_code = 130


@dataclass
class Outcome:
    code: int | None  # exit status; None when it was stopped at its time limit
    seconds: float
    tail: list[str]  # its last lines, each at most LINE_WIDTH characters
    log: Path | None  # its output (up to LOG_LIMIT bytes)

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def timed_out(self) -> bool:
        return self.code is None


def _tail_lines(chunks: deque[bytes]) -> list[str]:
    text = b"".join(chunks)[-TAIL_BYTES:].decode("utf-8", "replace")
    lines = text.rstrip("\n").split("\n")[-TAIL_LINES:] if text.strip() else []
    return [ln if len(ln) <= LINE_WIDTH else ln[:LINE_WIDTH] + " [line cut]" for ln in lines]


def _end_group(pgid: int, proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the whole group, then SIGKILL once `grace` is over."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        if wait is not None:
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            # the shell is gone; what it left in the group is ended at once
            with suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            return


def run(command: str, cwd: Path, env: Mapping[str, str], timeout: float, log: Path | None = None,
        grace: float = GRACE) -> Outcome:
    """Run `sh -c command` in `cwd` within the limits above; never raises for the command's own failure."""
    started = time.monotonic()
    proc = subprocess.Popen(["sh", "-c", command], cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0)
    pgid = proc.pid
    read_end, write_end = os.pipe()  # both close-on-exec: only the watchdog gets the read end, as stdin
    try:
        watchdog = subprocess.Popen(["sh", "-c", WATCHDOG], stdin=read_end, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, process_group=pgid)
    except OSError:
        watchdog = None  # the command ended (and its group with it) before the watchdog could join
    finally:
        os.close(read_end)
    tail: deque[bytes] = deque()
    kept = [0]
    out = cast(io.BufferedReader, proc.stdout)

    def pump() -> None:
        written = 0
        with ExitStack() as stack:
            try:
                fh = stack.enter_context(open(log, "wb")) if log is not None else None
            except OSError:
                fh = None  # no log, only the tail
            try:
                while chunk := out.read1(1 << 16):
                    tail.append(chunk)
                    kept[0] += len(chunk)
                    while kept[0] - len(tail[0]) >= TAIL_BYTES:
                        kept[0] -= len(tail.popleft())
                    if fh is not None and written < LOG_LIMIT:
                        fh.write(chunk[: LOG_LIMIT - written])
                        written += min(len(chunk), LOG_LIMIT - written)
                        if written >= LOG_LIMIT:
                            fh.write(f"\n[git-fleet: output cut at {LOG_LIMIT // (1024 * 1024)} MiB]\n".encode())
            except (OSError, ValueError):
                pass  # the pipe went away: what was read is what there is

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    code: int | None
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _end_group(pgid, proc, grace)
        code = None
    finally:
        if proc.returncode is None:  # interrupted (Stopped, KeyboardInterrupt): end it before going
            _end_group(pgid, proc, 0.5)
        os.close(write_end)  # the watchdog ends whatever the command left behind in its group
        if watchdog is not None:
            watchdog.wait()
        reader.join(5)  # at once, unless something escaped the group and still holds the pipe
        if not reader.is_alive():
            out.close()
    return Outcome(code, time.monotonic() - started, _tail_lines(tail), log)


@contextmanager
def stoppable() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into Stopped for the block, so that `finally` clauses run (the
    command's group is ended, scratch worktrees removed) instead of the process just vanishing."""

    def stop(signum: int, _frame: object) -> None:
        raise Stopped(f"stopped by {signal.Signals(signum).name}; nothing was changed")

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextmanager
def deferred() -> Iterator[list[str]]:
    """Hold SIGINT, SIGTERM and SIGHUP off for the block (and for the processes it starts, which
    inherit the mask), so that a step that must not be cut in two is not; yields a list that
    names the signals that arrived meanwhile, filled when the block ends."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    arrived: list[str] = []
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield arrived
    finally:
        pending = signal.sigpending() & held
        arrived += sorted(signal.Signals(s).name for s in pending)
        ignored = {s: signal.signal(s, signal.SIG_IGN) for s in pending}
        signal.pthread_sigmask(signal.SIG_SETMASK, old)  # delivered now, and ignored
        for s, handler in ignored.items():
            signal.signal(s, handler)
