"""What each agent is doing, as its agent CLI's hooks report it: working (and on which tool),
needs you (a permission prompt or a question), idle (its turn ended), exited; since when; its
CLI's session id; and how many edits and commands were refused at the edit.

Each agent has a directory of its own, `$GIT_COMMON_DIR/fleet/agents/NAME/`, with two logs that
its hooks only append to, one line per event: `events` (JSON) and `refused`. A line is written
with one write(2) on a file opened O_APPEND, so the hooks of one agent (which run in parallel for
parallel tool calls) and of ten agents never lose a line or wait for each other, and no lock is
taken. These are reports, not records recovery reads: they are not fsynced (durable.py is for
those), and a report that cannot be written is dropped, never an agent held up by it. Readers
take the last line they can parse from the end of the log.
"""

from __future__ import annotations

import os
import stat
import time

from . import fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

WORKING, NEEDS_YOU, IDLE, EXITED = "working", "needs you", "idle", "exited"
STATES = (WORKING, NEEDS_YOU, IDLE, EXITED)
LINE_MAX = 3000  # bytes: one write of at most this much is never interleaved with another's
TAIL = 64 * 1024  # bytes of the log's end that a reader looks at


def directory(common_dir: str, agent: str) -> str:
    return os.path.join(common_dir, "fleet", "agents", agent)


def confined() -> str | None:
    """The agent's own directory (directory()) where this process runs in that agent's sandbox
    (sandbox_layout.confine: FLEET_SANDBOX, and its scratch there), the one place of the fleet's it
    may write; None elsewhere."""
    scratch = os.environ.get("FLEET_SCRATCH")
    return os.path.dirname(scratch) if os.environ.get("FLEET_SANDBOX") == "1" and scratch else None


def _append(path: str, line: bytes) -> None:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, flags, 0o644)
        except OSError:
            return  # a report dropped: the agent goes on
    except OSError:
        return
    try:
        os.write(fd, line)
    except OSError:
        pass  # (a full disk: the report is dropped, never the agent's tool call)
    finally:
        os.close(fd)


def report(common_dir: str, agent: str, cli: str, event: str, state: str | None, session: str | None = None,
           tool: str | None = None, message: str | None = None, use: str | None = None) -> None:
    """Add one event to the agent's log (state None: an event that changes no state). `use`: the
    tool call's id, where the CLI gives one. A session the fleet started (its environment says
    FLEET_AGENT is this agent) is marked so, for resume."""
    launched = 1 if os.environ.get("FLEET_AGENT") == agent else None
    fields: dict[str, str | float | None] = {"t": round(time.time(), 3), "cli": cli, "event": event,
                                             "state": state, "session": session, "tool": tool, "message": message,
                                             "use": use, "fleet": launched}
    line = fastjson.dumps_flat({k: v for k, v in fields.items() if v is not None})
    if len(line) > LINE_MAX:
        fields["message"] = (message or "")[: LINE_MAX // 8] + "..."  # (6 bytes a character at most)
        line = fastjson.dumps_flat({k: v for k, v in fields.items() if v is not None})
    _append(os.path.join(directory(common_dir, agent), "events"), line.encode() + b"\n")


def tell_machines(common_dir: str, agent: str, state: str) -> bool:
    """Whether the other machines of a fleet across machines are to be told of `state`: a
    change from the last state told (the publisher's next round carries it in the agent's hold)."""
    told = os.path.join(directory(common_dir, agent), "told")
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # (the directory is the agent's: no link, no FIFO)
    try:
        fd = os.open(told, os.O_RDONLY | flags)
        try:
            if os.read(fd, 64) == state.encode():
                return False
        finally:
            os.close(fd)
    except OSError:
        pass
    try:
        fd = os.open(told, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flags, 0o644)
        try:
            os.write(fd, state.encode())
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def refused(common_dir: str, agent: str, what: str) -> None:
    """Count one edit or command refused at the edit (`what`: the first line of the refusal)."""
    line = f"{time.time():.3f} {what}".replace("\n", " ")[:LINE_MAX]
    _append(os.path.join(directory(common_dir, agent), "refused"), line.encode("utf-8", "surrogateescape") + b"\n")


def _open_log(path: str) -> BinaryIO:
    """One of its logs, for reading: a regular file, never through a link, and never a FIFO that
    would keep the reader waiting (the directory is a sandboxed agent's to fill: OSError else)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def _tail(path: str) -> list[bytes]:
    try:
        with _open_log(path) as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - TAIL))
            data = fh.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    return lines[1:] if size > TAIL else lines  # (the first may be cut)


_READ: dict[str, tuple[tuple[int, int, int], dict[str, object] | None]] = {}  # log -> (its stat, what it said)


def read(common_dir: str, agent: str) -> dict[str, object] | None:
    """The agent's last reported state: {state, since, tool, message, session, launched_session,
    launched, refused}; None when its hooks never reported. A log read before is read again only
    once it changed (appended to, or rotated: its size or file differs), for the watch."""
    path = os.path.join(directory(common_dir, agent), "events")
    try:
        st = os.stat(path)
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        key = (0, 0, 0)
    hit = _READ.get(path)
    if hit is not None and hit[0] == key:
        return {**hit[1], "refused": count_refused(common_dir, agent)} if hit[1] is not None else None
    found = _read(path)
    _READ[path] = (key, found)
    return {**found, "refused": count_refused(common_dir, agent)} if found is not None else None


def _read(path: str) -> dict[str, object] | None:
    events = []
    for raw in _tail(path):
        try:
            event = fastjson.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            continue  # a line cut short (a full disk): skipped
        if isinstance(event, dict) and isinstance(event.get("t"), (int, float)):
            events.append(event)
    with_state = [e for e in events if e.get("state") in STATES]
    if not with_state:
        return None
    last = _pending_question(with_state) or with_state[-1]
    since = last["t"]
    for e in reversed(with_state):  # since when the state has held, as far as the log's end shows
        if e["t"] < last["t"] and e["state"] != last["state"]:
            break
        since = min(since, e["t"])
    session = next((e["session"] for e in reversed(events) if e.get("session")), None)
    launched = next((e["session"] for e in reversed(events) if e.get("session") and e.get("fleet")), None)
    return {"state": last["state"], "since": since, "message": last.get("message"),
            "tool": last.get("tool") if last.get("event") in BEFORE_TOOL + ASKS else None,
            "session": session, "launched_session": launched, "launched": bool(events[-1].get("fleet"))}


BEFORE_TOOL = ("PreToolUse", "BeforeTool")
ASKS = ("PermissionRequest", "Notification")
AFTER_TOOL = ("PostToolUse", "PostToolUseFailure", "AfterTool")
PROMPTS = ("UserPromptSubmit", "BeforeAgent")


def _pending_question(events: list[dict[str, object]]) -> dict[str, object] | None:
    """A question still waiting for the person although later events say working: parallel
    tool calls go on (and end) while one of them waits at its permission prompt. It is answered
    by its own tool call ending (the same call id, else the same tool), a new prompt, or the
    turn's end."""
    for i in range(len(events) - 1, -1, -1):
        asked = events[i]
        if asked["state"] in (IDLE, EXITED):
            return None
        if asked["state"] != NEEDS_YOU:
            continue
        for later in events[i + 1:]:
            if later.get("event") in PROMPTS or later["state"] in (IDLE, EXITED):
                return None
            same = later.get("use") == asked.get("use") if asked.get("use") else later.get("tool") == asked.get("tool")
            if later.get("event") in AFTER_TOOL and same:
                return None
        return asked
    return None


ROTATE = 1 << 20  # bytes: a log past this is set aside when its agent starts again (readers take its end only)


def rotate(common_dir: str, agent: str) -> None:
    """Set the agent's event log aside as `events.1` (replacing an older one) once it has grown
    past ROTATE; called before the agent starts, when no hook of it writes."""
    path = os.path.join(directory(common_dir, agent), "events")
    try:
        if os.stat(path).st_size > ROTATE:
            os.replace(path, path + ".1")
    except FileNotFoundError:
        pass  # nothing reported yet


def forget(common_dir: str, agent: str) -> None:
    """The agent's reports gone with it (git fleet-rm): a new agent of its name starts afresh."""
    import shutil  # (git fleet-rm only)

    shutil.rmtree(directory(common_dir, agent), ignore_errors=True)


def count_refused(common_dir: str, agent: str) -> int:
    try:
        with _open_log(os.path.join(directory(common_dir, agent), "refused")) as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))
    except OSError:
        return 0
