"""rm: a task added by mistake, ended as removed and its spec deleted. Only a task nobody ever
claimed and nothing waits for; rm keeps workers off it while it decides by a claim of its own,
flocked for as long as rm runs (a rm killed before it decided counts for nothing)."""

from __future__ import annotations

import json
import os
import time

from .. import durable
from ..errors import FleetError
from ..pause import pause
from . import slots
from .ending import place
from .specs import Task, render
from .store import Store

REMOVED = "Removed: added by mistake (git fleet-task rm); its spec is deleted."


def remove(bus: Store, tid: int) -> Task:
    """Delete the spec of a task nobody ever claimed and nothing waits for (one added by
    mistake). A task with any history is cancelled instead, so its record stays.

    It ends as any task does, once: rm claims it (a claim of its own, `removed`, flocked while
    rm runs) to keep workers off, reads the specs again for tasks that wait for it (an add
    may have written one meanwhile), links its result, status removed, then deletes the spec.
    A cancel racing it is settled by that link: the first one linked wins, the other is
    refused. Killed before the link, its claim counts for nothing (see Store._load); after it, the
    spec is deleted by the next scan or rm."""
    task = bus.get(tid)
    hint = f"cancel it instead (git fleet-task cancel {tid} --reason ...): it ends, and its record stays"
    if task.status == "removed":  # a rm killed after it decided: finish its work
        _delete_spec(bus, task)
        return task
    if task.result is not None:
        raise FleetError(f"{task.name} is {task.status}; its spec stays with its result ({task.result})")
    if _being_removed(task):
        raise FleetError(f"{task.name} is being removed by another git fleet-task rm just now",
                         "see git fleet-task list in a moment")
    claims = [a.number for a in task.chain.history]  # (a worker's attempts, released ones too)
    if claims:
        live = task.claimed_by and task.expires is not None and task.expires > time.time()
        who = f"'{task.claimed_by}' holds it" if live else "it was claimed before"
        raise FleetError(f"{task.name} has been claimed (attempt {claims[-1]}): {who}", hint)
    _refuse_dependents(bus, task, hint)
    bus.ensure()
    number, fd = _marked(bus, task, hint)
    marker = bus.state / f"{task.name}.claim-{number}"
    result = bus.results / f"{task.name}-result.md"
    try:
        pause("rm-marked")
        bus._listing = None
        _refuse_dependents(bus, task, hint)  # again: an add --depends may have written its spec meanwhile
        meta = {"task": task.name, "title": task.title, "status": "removed",
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if not place(bus, task.name, render(meta, REMOVED)):
            status = bus._outcome(task.name, result)[0]
            raise FleetError(f"{task.name} {'was' if status == 'removed' else 'is'} {status}: it ended just now; "
                             "it was not removed", f"see {result}")
    finally:
        marker.unlink(missing_ok=True)  # (ours: no one else writes that name; decided, it keeps nothing off)
        os.close(fd)
    pause("rm-ended")
    _delete_spec(bus, task)
    return task


def removable(bus: Store) -> list[Task]:
    """The tasks remove would take now (what completion offers rm): not ended, never claimed by
    a worker (a claim of a rm that was killed before it decided does not count; one deciding now
    holds the task), and waited for by no unfinished task, nor possibly (its depends unreadable)."""
    unfinished = [t for t in bus.all() if t.result is None]
    waited_for = {d for t in unfinished for d in t.depends}
    unknown = {t.id for t in unfinished if not getattr(t, "depends_known", True)}

    return [t for t in unfinished
            if t.status != "claimed" and not t.chain.history and t.id not in waited_for and not unknown - {t.id}]


def _being_removed(task: Task) -> bool:
    """Whether a rm deciding now holds `task` (its claim, flocked while it runs: Store._chain)."""
    holder = task.chain.holder if task.chain is not None else None
    return holder is not None and holder.removed and not holder.released


def _delete_spec(bus: Store, task: Task) -> None:
    try:
        task.path.unlink(missing_ok=True)
    except OSError as e:
        raise FleetError(f"cannot delete {task.path}: {e.strerror}; {task.name} is removed all the same "
                         f"(results/{task.name}-result.md)", f"delete it by hand, or git fleet-task rm {task.id} "
                         "again when it can be written") from None
    bus._listing = None


def _refuse_dependents(bus: Store, task: Task, hint: str) -> None:
    """Refuse to remove `task` if an unfinished task waits for it, or may: a spec so broken
    that its depends cannot be read."""
    waiting = bus.dependents(task.id)
    if waiting:
        raise FleetError(f"{', '.join(t.name for t in waiting)} depend{'s' if len(waiting) == 1 else ''} on "
                         f"{task.name}", hint + "; or remove the dependency from their specs (depends:)")
    unknown = [t for t in bus.all() if not t.depends_known and t.result is None and t.id != task.id]
    if unknown:
        raise FleetError("\n".join([f"cannot tell whether {t.name} depends on {task.name}: its spec cannot be read"
                                     for t in unknown] + [t.error or "" for t in unknown]),
                         f"fix {'them' if len(unknown) > 1 else 'it'} (git fleet-doctor lists where), then remove "
                         f"{task.name}; or " + hint)


def _marked(bus: Store, task: Task, hint: str) -> tuple[int, int]:
    """rm's claim made (_mark), at the next free number; refused if the task was claimed, ended or
    is being removed meanwhile (a number taken by junk or by a cancel that lost is passed over)."""
    while True:
        number = slots.next_number(task.chain)
        fd = _mark(bus, task, number)
        if fd is not None:
            return number, fd
        task = bus.get(task.id)
        if _being_removed(task):
            raise FleetError(f"{task.name} is being removed by another git fleet-task rm just now",
                             "see git fleet-task list in a moment")
        if task.result is not None:
            raise FleetError(f"{task.name} {'was' if task.status == 'removed' else 'is'} {task.status}: it ended just "
                             "now; it was not removed", f"see {task.result}")
        if task.chain.history:
            raise FleetError(f"{task.name} was claimed just now; it was not removed", hint)


def _mark(bus: Store, task: Task, attempt: int) -> int | None:
    """rm's claim of `task`, the next attempt, `removed`: an exclusive create, as a worker's claim,
    of a file flocked before it appears. Returns the open file, which holds the lock until it
    is closed (or rm ends); None if a worker or another rm claimed that attempt first."""
    record = {"agent": None, "attempt": attempt, "pid": os.getpid(), "title": task.title, "claimed": time.time(),
              "expires": time.time() + bus.lease, "removed": True}
    return durable.create_held(bus.state / f"{task.name}.claim-{attempt}", json.dumps(record))
