"""Claims and leases: attempt k of a task is claimed by creating `.state/task-N.claim-k`, so of
two workers exactly one gets it, and an expired lease is taken over, exactly once, by creating
attempt k+1. The holder of the current attempt renews, releases, or ends it (ending.py)."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from .. import durable
from ..errors import FleetError
from .specs import ENDED, SPEC, Task, parse_id
from .store import Store

if TYPE_CHECKING:
    from ..notify import Watcher


def claim(bus: Store, agent: str, lease: int | None = None) -> Task | None:
    """Claim the next task for `agent`: open, its dependencies done, assigned to it or to
    nobody, by priority then id. None when nothing can be claimed now."""
    bus.ensure()
    scan = bus._scan()
    attempts, results = scan
    specs = bus._spec_paths()
    unfinished = {tid: p for tid, p in specs.items() if f"task-{tid:03d}-result.md" not in results}
    done = {tid for tid in specs if tid not in unfinished and bus._outcome(
        f"task-{tid:03d}", bus.results / f"task-{tid:03d}-result.md")[0] == "done"}
    # candidates from the (cached) specs alone; claim files are read only in turn, until one is open
    candidates = []
    for tid, path in unfinished.items():
        try:
            meta, _ = bus._spec(path)
            if (meta.get("agent") or None) not in (None, agent):
                continue
            if not {parse_id(d) for d in meta.get("depends", [])} <= done:
                continue
            candidates.append((-int(meta.get("priority", 0) or 0), tid, path))
        except (FleetError, ValueError, UnicodeDecodeError, OSError):
            continue  # an unreadable spec is listed as invalid, never claimed
    for _, tid, path in sorted(candidates):
        try:
            task = bus._load(tid, path, scan)
        except FileNotFoundError:
            continue  # removed meanwhile
        if task.status != "open":
            continue
        if _take(bus, task, agent, lease):
            if (bus.results / f"{task.name}-result.md").exists():
                continue  # it ended (or was cancelled) between our look and our claim
            return bus.get(task.id)
    return None


def claim_waiting(bus: Store, watcher: Watcher, agent: str, lease: int | None = None) -> Task:
    """Claim the next task for `agent`, waiting until one can be claimed: woken by `watcher` (a
    notify.Watcher of the bus, watching from before the next scan, so no change slips between),
    and at the latest when a lease lapses, or every 5 seconds."""
    with watcher as watch:
        while (task := claim(bus, agent, lease)) is None:
            pending = [t.expires for t in bus.all() if t.status == "claimed" and t.expires]
            watch.wait(min([5.0] + [max(0.05, e - time.time()) for e in pending]))
    return task


def _take(bus: Store, task: Task, agent: str | None, lease: int | None, **extra: Any) -> bool:
    """Claim attempt N+1 of an open task by exclusive create; False if another worker won it."""
    attempt = task.attempt + 1
    record = {"agent": agent, "attempt": attempt, "pid": os.getpid(), "title": task.title,
              "claimed": time.time(), "expires": time.time() + (lease or bus.lease), **extra}
    return durable.create(bus.state / f"{task.name}.claim-{attempt}", json.dumps(record))


def adopt(bus: Store, tid: int, file: str, spec: str, agent: str, lease: int | None = None) -> Task:
    """Hold here a task that `agent` held in another clone (git fleet-teleport pull): the
    spec is written under its own name and id if this bus lacks it, then claimed for the
    agent, or renewed if the agent holds it already."""
    bus.ensure()
    have = bus._spec_paths().get(tid)
    if have is None:
        m = SPEC.match(file)
        if m is None or int(m.group(1)) != tid or "/" in file:
            raise FleetError(f"'{file}' is not the spec file of task {tid}")
        durable.create(bus.state / f"id-{tid}", f"{os.getpid()}\n")  # keep `add` from reusing the id
        if not durable.create(bus.tasks / file, spec):
            raise FleetError(f"{bus.tasks / file} appeared meanwhile")
        bus._listing = None
    elif have.name != file or have.read_text(encoding="utf-8") != spec:
        raise FleetError(f"task {tid} here is another task ({have.name})",
                         "add it here under a new id with git fleet-task add")
    task = bus.get(tid)
    if task.status in ("done", *ENDED):
        raise FleetError(f"it is {task.status} here")
    live = task.expires is not None and task.expires > time.time()
    if task.status == "claimed" or task.status == "invalid" and live:  # (held, its spec broken since)
        if task.claimed_by != agent:
            raise FleetError(f"'{task.claimed_by or 'git fleet-task rm'}' holds it here")
        return renew(bus, tid, agent, lease)
    if not _take(bus, task, agent, lease):
        raise FleetError("another worker claimed it just now")
    return bus.get(tid)


def holding(bus: Store, tid: int, agent: str) -> Task:
    """The task, if `agent` holds its current attempt, live. A spec broken by hand after the
    claim does not take it away: the claim is the truth, and the holder may renew or finish."""
    task = bus.get(tid)
    if task.status == "cancelled":
        raise FleetError(f"{task.name} was cancelled{bus.why_cancelled(task)}; '{agent}' does not hold it any more",
                         "stop working on it: it is not to be done; git fleet-task claim takes the next task")
    if task.status in ("done", "failed", "removed"):
        raise FleetError(f"{task.name} is {task.status} already", f"see {task.result}")
    live = task.expires is not None and task.expires > time.time()
    if task.claimed_by != agent or not live:
        state = (f"{task.name} is claimed by '{task.claimed_by}' (attempt {task.attempt})" if task.claimed_by and live
                 else f"{task.name} is not claimed" if not task.attempt
                 else f"the lease of {task.name} (attempt {task.attempt}) has lapsed")
        broken = f"\n{task.error}" if task.error else ""
        raise FleetError(f"{state}; '{agent}' does not hold it{broken}",
                         "claim it first with `git fleet-task claim`")
    return task


def renew(bus: Store, tid: int, agent: str, lease: int | None = None) -> Task:
    task = holding(bus, tid, agent)
    record = bus._claim(task.name, task.attempt) or {}
    record["expires"] = time.time() + (lease or bus.lease)
    durable.replace(bus.state / f"{task.name}.claim-{task.attempt}", json.dumps(record))
    return bus.get(tid)


def release(bus: Store, tid: int, agent: str) -> Task:
    task = holding(bus, tid, agent)
    record = bus._claim(task.name, task.attempt) or {}
    record["released"] = True
    durable.replace(bus.state / f"{task.name}.claim-{task.attempt}", json.dumps(record))
    return bus.get(tid)
