"""How a task ends by its holder or the orchestrator: its result linked into place once
(`results/task-N-result.md`), by the holder of its current attempt (done, failed) or by a
cancel; and a result that cannot be recorded as the outcome, kept aside rather than dropped
(`results/task-N-unrecorded-AGENT-K.md`)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from .. import durable
from ..errors import FleetError
from .claims import holding
from .specs import CANCELLED, Task, render
from .store import Store


def finish(bus: Store, tid: int, agent: str, body: str, *, failed: bool = False) -> Task:
    """Record the outcome of a task `agent` holds. Refused (the task was cancelled, taken over,
    ended meanwhile), the result is not dropped: it is kept beside the outcome, if `agent`
    ever held the task, and the error says where."""
    status = "failed" if failed else "done"
    try:
        task = holding(bus, tid, agent)
        meta = {"task": task.name, "title": task.title, "status": status, "agent": agent,
                "attempt": task.attempt, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        bus.ensure()
        if not durable.create(bus.results / f"{task.name}-result.md", render(meta, body)):
            ended = bus.get(tid)
            if ended.status == "cancelled":
                holding(bus, tid, agent)  # (says so, with the reason)
            raise FleetError(f"{task.name} is {ended.status}: it ended while this result was being written; "
                             "this one was not recorded", f"see {ended.result}")
    except FleetError as e:
        kept = _keep(bus, tid, agent, status, body, e.message.split("\n")[0])
        if isinstance(kept, OSError):
            e.hint = "\n".join([*(e.hint.split("\n") if e.hint else []),
                                f"this result could not be kept aside either ({kept.strerror or kept}): keep the file "
                                "or text you gave yourself"])
        elif kept is not None:
            e.hint = "\n".join([*(e.hint.split("\n") if e.hint else []),
                                f"nothing is lost: this result is kept at {kept}"])
        raise
    return bus.get(tid)


def _keep(bus: Store, tid: int, agent: str, status: str, body: str, why: str) -> Path | OSError | None:
    """Keep a result that was not recorded as the task's outcome at
    results/task-N-unrecorded-AGENT-K.md, if `agent` held some attempt of the task; None if it
    never did (a typo in the id, say); the error when the file cannot be written."""
    name = f"task-{tid:03d}"
    held = [k for k in range(1, bus._scan()[0].get(name, 0) + 1)
            if (bus._claim(name, k) or {}).get("agent") == agent]
    if not held:
        return None
    meta = {"task": name, "title": (bus._claim(name, held[-1]) or {}).get("title"), "status": status,
            "agent": agent, "attempt": held[-1],
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "unrecorded": why.replace("\n", " ")}
    who = re.sub(r"[^A-Za-z0-9._-]+", "-", agent).strip("-.") or "agent"
    try:
        bus.ensure()
        for k in range(1, 1000):
            path = bus.results / f"{name}-unrecorded-{who}-{k}.md"
            if durable.create(path, render(meta, body)):
                return path
    except OSError as e:
        return e  # (said by the caller, with the refusal)
    return None  # (a thousand kept already: the caller's refusal stands alone)


def unrecorded(bus: Store, task: Task) -> list[Path]:
    """The results kept for `task` that were not recorded as its outcome."""
    return sorted(bus.results.glob(f"{task.name}-unrecorded-*.md"))


def cancel(bus: Store, tid: int, reason: str | None = None) -> Task:
    """End a task that has not ended (open, claimed, or with a spec broken by hand): its
    outcome is a result file with status cancelled, linked into place as any result is, so a
    holder's `done`, a rm and the cancel cannot both win. The holder is refused from then on.
    The reason is the result's body, as given (the front matter is closed before it, so it
    can add nothing there); it is shown on one line."""
    task = bus.get(tid)
    if task.result is not None:
        state = "was removed" if task.status == "removed" else f"is {task.status}"
        raise FleetError(f"{task.name} {state} already; there is nothing to cancel", f"see {task.result}")
    holder = task.claimed_by if task.expires is not None and task.expires > time.time() else None
    meta = {"task": task.name, "title": task.title, "status": "cancelled", "holder": holder,
            "attempt": task.attempt, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    bus.ensure()
    result = bus.results / f"{task.name}-result.md"
    if not durable.create(result, render(meta, (reason or "").strip() or CANCELLED)):
        status = bus._outcome(task.name, result)[0]  # (its spec may be gone: a rm won)
        raise FleetError(f"{task.name} {'was' if status == 'removed' else 'is'} {status}: it ended just now; "
                         "nothing was cancelled", f"see {result}")
    return bus.get(tid)
