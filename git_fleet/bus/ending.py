"""How a task ends by its holder or the orchestrator: its result linked into place once
(`results/task-N-result.md`), by the holder of its current attempt (done, failed) or by a
cancel; and a result that cannot be recorded as the outcome, kept aside rather than dropped
(`results/task-N-unrecorded-AGENT-K.md`)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from .. import durable
from ..errors import FleetError
from ..pause import pause
from . import slots
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
        done = _end(bus, task, agent, status, render(meta, body))
        if done is None:
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
    return done


def _end(bus: Store, task: Task, agent: str, status: str, text: str) -> Task | None:
    """End the attempt `agent` holds (`task`, as just read): the result in its own
    results/agents/A/, then an end (an attempt of its own, slots.py) in tasks/.state/; the task
    ended, if this is the first end that counts, else None. A link results/task-N-result.md to
    the result is made for people where the name is free."""
    result = bus.own(agent, results=True) / f"{task.name}-result.md"
    slots.create_own(result, text)
    now = task
    for tries in range(20):
        if tries:
            now = bus.get(task.id)  # (a number taken meanwhile: as it is now)
        if now.result is not None or now.claimed_by != agent or now.attempt != task.attempt:
            return None
        number = slots.next_number(now.chain)
        name = f"{task.name}.claim-{number}"
        record = {"agent": agent, "task": task.name, "attempt": number, "ends": task.attempt, "status": status,
                  "title": task.title, "pid": os.getpid(), "finished": time.time()}
        own = bus.own(agent)
        slots.create_own(own / name, json.dumps(record))
        pause("done-ending")
        if durable.symlink(f"{slots.AGENTS}/{agent}/{name}", bus.state / name):
            ended = bus.get(task.id)
            # the first end, and what the bus says of the task: a result file of the orchestrator's
            # (a cancel that decided, its attempt gone since) outranks any end
            if ended.chain.end is None or ended.chain.end.number != number or ended.result is None \
                    or ended.status != status or ended.claimed_by != agent:
                return None
            if durable.symlink(f"{slots.AGENTS}/{agent}/{result.name}", bus.results / result.name):
                ended.result = bus.results / result.name  # (the name people look for, now it is there)
            return ended
        (own / name).unlink(missing_ok=True)
    return None


def _keep(bus: Store, tid: int, agent: str, status: str, body: str, why: str) -> Path | OSError | None:
    """Keep a result that was not recorded as the task's outcome at
    results/task-N-unrecorded-AGENT-K.md (a link to it in the agent's own results/agents/A/), if
    `agent` held some attempt of the task; None if it never did (a typo in the id, say); the
    error when the file cannot be written."""
    name = f"task-{tid:03d}"
    try:
        chain = bus._chain(name, bus._scan())
    except OSError as e:
        return e
    held = [a for a in chain.history if a.agent == agent]
    if not held:
        return None
    meta = {"task": name, "title": held[-1].title or None, "status": status,
            "agent": agent, "attempt": held[-1].number,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "unrecorded": why.replace("\n", " ")}
    who = re.sub(r"[^A-Za-z0-9._-]+", "-", agent).strip("-.") or "agent"
    try:
        own = bus.own(agent, results=True)
        for k in range(1, 1000):
            path = bus.results / f"{name}-unrecorded-{who}-{k}.md"
            if os.path.lexists(path) or (own / path.name).exists():
                continue
            durable.replace(own / path.name, render(meta, body))
            if durable.symlink(f"{slots.AGENTS}/{agent}/{path.name}", path):
                return path
            return own / path.name  # (its name taken meanwhile: where it is kept, all the same)
    except OSError as e:
        return e  # (said by the caller, with the refusal)
    return None  # (a thousand kept already: the caller's refusal stands alone)


def unrecorded(bus: Store, task: Task) -> list[Path]:
    """The results kept for `task` that were not recorded as its outcome: regular files (an older
    version's), and links to a file in the agent's own directory that has the link's name."""
    kept = []
    for path in bus.results.glob(f"{task.name}-unrecorded-*.md"):
        if not path.is_symlink():
            if path.is_file():
                kept.append(path)
            continue
        try:
            agent = slots.agent_of(os.readlink(path), path.name)
            if agent is not None:
                os.close(slots.open_beneath(bus.results, slots.AGENTS, agent, path.name))
                kept.append(path)
        except OSError:
            continue
    return sorted(kept)


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
    number, slot = _cancel_slot(bus, tid)
    try:
        ended = bus.get(tid)
        if ended.chain.end is None or ended.chain.end.number != number:  # a holder's end came first
            raise FleetError(f"{task.name} {_was(ended.status)}: it ended just now; nothing was cancelled",
                             f"see {ended.result}")
        if not place(bus, task.name, render(meta, (reason or "").strip() or CANCELLED)):
            status = bus._outcome(task.name, result)[0]  # (its spec may be gone: a rm won)
            raise FleetError(f"{task.name} {'was' if status == 'removed' else 'is'} {status}: it ended just now; "
                             "nothing was cancelled", f"see {result}")
    finally:
        slot.unlink(missing_ok=True)  # (decided: the result file says it from now on)
    return bus.get(tid)


def place(bus: Store, name: str, text: str) -> bool:
    """Write results/NAME-result.md, the orchestrator's end of a task (a cancel's or a rm's) as a
    regular file; junk an agent put at that name (a link, a FIFO: nothing counts by it) is
    cleared first. False if a regular file is there: an end that came first."""
    result = bus.results / f"{name}-result.md"
    while not durable.create(result, text):
        if os.path.isfile(result) and not os.path.islink(result):
            return False
        try:
            os.unlink(result)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise FleetError(f"cannot clear {result} to write {name}'s end there: {e.strerror}",
                             "nothing counts by what is there: remove it by hand") from None
    return True


def _was(status: str) -> str:
    """How an ending is said: a removed task was removed (its spec is gone); another is as it ended."""
    return f"was {status}" if status == "removed" else f"is {status}"


def _cancel_slot(bus: Store, tid: int) -> tuple[int, Path]:
    """The cancel's end in the task's attempts (a regular file: the orchestrator's), so that of it
    and a holder's end the first counts; refused if the task ended meanwhile."""
    while True:
        task = bus.get(tid)
        if task.result is not None:
            raise FleetError(f"{task.name} {_was(task.status)}: it ended just now; nothing was cancelled",
                             f"see {task.result}")
        number = slots.next_number(task.chain)
        slot = bus.state / f"{task.name}.claim-{number}"
        record = {"agent": None, "task": task.name, "attempt": number, "ends": "cancelled", "pid": os.getpid(),
                  "expires": 0}
        if durable.create(slot, json.dumps(record)):
            return number, slot
