"""Adding a task: its id by an exclusive create (`.state/id-N`), its spec written once, and what
it depends on checked before the spec is written and again after (a rm of a dependency racing
the add: one of the two always sees the other)."""

from __future__ import annotations

import contextlib
import os
import time

from .. import durable
from ..errors import FleetError, UsageError
from ..pause import pause
from .specs import ENDED, Task, ended_at, one_line, render, slug
from .store import Store

RM_WAIT = 10.0  # seconds an add waits for a rm of its dependency to decide


def add(bus: Store, title: str, *, agent: str | None = None, body: str = "", depends: list[int] | None = None,
        priority: int = 0) -> Task:
    if not one_line(title):
        raise UsageError("a task needs a title")
    for d in depends or []:  # before anything is made: a refused add leaves no trace
        _dependency(bus, d)
    bus.ensure()
    # last-id is only a hint (it may lag behind); the exclusive create of id-N decides
    hint = bus.state / "last-id"
    try:
        tid = int(hint.read_text()) + 1
    except (OSError, ValueError):
        tid = max(bus._spec_paths(), default=0) + 1
    while not durable.create(bus.state / f"id-{tid}", f"{os.getpid()}\n"):
        tid += 1  # another process took it: the next one
    with contextlib.suppress(OSError):  # the next id is only a hint: a scan finds it without one
        durable.replace(hint, str(tid))
    meta = {"id": tid, "title": one_line(title), "agent": agent, "depends": [str(d) for d in depends or []],
            "priority": priority, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = bus.tasks / f"task-{tid:03d}-{slug(title)}.md"
    if not durable.create(path, render(meta, body or title)):
        raise FleetError(f"{path} exists already")
    bus._listing = None
    pause("add-written")
    # again, now that the spec is there: a rm of a dependency that read the specs before this
    # one was written has its claim in place by now (rm claims, then reads the specs again)
    for d in depends or []:
        try:
            _dependency(bus, d, written=True)
        except FleetError as e:
            path.unlink(missing_ok=True)
            bus._listing = None
            raise FleetError(f"{e.message}; task-{tid:03d} was not added (its spec is deleted again)",
                             e.hint) from None
    return bus.get(tid)


def _dependency(bus: Store, d: int, *, written: bool = False) -> None:
    """Refuse a dependency on task `d` if no task could ever get past it: it does not exist
    (a wrong id: misuse, exit 2; or deleted meanwhile, once this task's spec is written: exit
    1), or it ended in a way no dependent waits out (failed, cancelled, removed). A rm of it
    that is deciding just now is waited for, up to RM_WAIT seconds."""
    name = f"task-{d:03d}"
    claim = bus._chain(name, bus._scan()).holder
    if claim is not None and claim.removed and not claim.released:
        deadline = time.monotonic() + RM_WAIT
        while bus._removing(name, claim.number):
            if time.monotonic() > deadline:
                raise FleetError(f"{name} (a dependency) is being removed by git fleet-task rm (pid "
                                 f"{claim.record.get('pid')}) just now", "try again in a moment")
            time.sleep(0.02)
    ended = bus.ended(d)
    if ended is not None and ended[0] in ENDED:
        status, result = ended
        raise FleetError(f"{name} (a dependency) {'was' if status == 'removed' else 'is'} {status}"
                         f"{ended_at(result)}: a task that waits for it could never be claimed",
                         f"add it without --depends {d} (see {result})")
    bus._listing = None
    if d not in bus._spec_paths():
        if written:
            raise FleetError(f"{name} (a dependency) was deleted meanwhile")
        raise UsageError(f"task {d} (a dependency) does not exist", "list them with git fleet-task list")
