"""Claims and leases: attempt k of a task is claimed by creating `.state/task-N.claim-k` (a symlink
to the agent's own record, slots.py), so of two workers exactly one gets it, and an expired lease
is taken over, exactly once, by creating a later attempt; each worker reads back whether its
attempt counts. The holder of the current attempt renews, releases, or ends it (ending.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import durable
from ..errors import FleetError
from . import slots
from .specs import ENDED, SPEC, Task, parse_id, why_cancelled
from .store import Store

if TYPE_CHECKING:
    from ..notify import Watcher


def claim(bus: Store, agent: str, lease: int | None = None) -> Task | None:
    """Claim the next task for `agent`: open, its dependencies done, assigned to it or to
    nobody, by priority then id. None when nothing can be claimed now.

    Tasks with a link at their result's name (ended by an agent, most likely) are tried only after
    the others: whether one ended is read from its attempts, which costs reads, so a bus of many
    ended tasks costs a claim little more than its open ones."""
    bus.ensure()
    scan = bus._scan()
    unlinked: list[tuple[int, Path]] = []
    linked: list[tuple[int, Path]] = []
    for tid, path in bus._spec_paths().items():
        result = scan.results.get(f"task-{tid:03d}-result.md")
        if not result:  # (a regular result file: it ended)
            (unlinked if result is None else linked).append((tid, path))
    for group in (unlinked, linked):
        won = _claim_among(bus, scan, group, agent, lease)
        if won is not None:
            return won
    return None


def _claim_among(bus: Store, scan: Any, tasks: list[tuple[int, Path]], agent: str, lease: int | None) -> Task | None:
    # candidates from the (cached) specs alone; claim files are read only in turn, until one is open
    candidates = []
    for tid, path in tasks:
        try:
            meta, _ = bus._spec(path)
            if (meta.get("agent") or None) not in (None, agent):
                continue
            depends = [parse_id(d) for d in meta.get("depends", [])]
            candidates.append((-int(meta.get("priority", 0) or 0), tid, path, depends))
        except (FleetError, ValueError, UnicodeDecodeError, OSError):
            continue  # an unreadable spec is listed as invalid, never claimed
    for _, tid, path, depends in sorted(candidates):
        if not all(_done(bus, scan, d) for d in depends):
            continue
        for _ in range(20):  # (a number taken meanwhile, by another worker or by junk: look again)
            try:
                task = bus._load(tid, path, scan)
            except FileNotFoundError:
                break  # removed meanwhile
            if task.status != "open":
                break
            number = _take(bus, task, agent, lease)
            if number is None:
                scan = bus._scan()
                continue
            won = bus.get(task.id)
            if won.status == "claimed" and won.claimed_by == agent and won.attempt == number:
                return won
            break  # it ended, or another worker's attempt counts first
    return None


def _done(bus: Store, scan: Any, tid: int) -> bool:
    ended = bus.ended(tid, scan)
    return ended is not None and ended[0] == "done"


def claim_waiting(bus: Store, watcher: Watcher, agent: str, lease: int | None = None) -> Task:
    """Claim the next task for `agent`, waiting until one can be claimed: woken by `watcher` (a
    notify.Watcher of the bus, watching from before the next scan, so no change slips between),
    and at the latest when a lease lapses, or every 5 seconds."""
    with watcher as watch:
        while (task := claim(bus, agent, lease)) is None:
            pending = [t.expires for t in bus.all() if t.status == "claimed" and t.expires]
            watch.wait(min([5.0] + [max(0.05, e - time.time()) for e in pending]))
    return task


def _take(bus: Store, task: Task, agent: str, lease: int | None) -> int | None:
    """Claim the next attempt of an open task for `agent`: its record in the agent's own directory,
    then the slot, a symlink to it (slots.py); the attempt's number, or None if another worker (or
    junk) took that number first. Whether it counts is for the caller to read back."""
    chain = task.chain if task.chain is not None else bus._chain(task.name, bus._scan())
    number = slots.next_number(chain)
    name = f"{task.name}.claim-{number}"
    own = bus.own(agent)
    record = {"agent": agent, "task": task.name, "attempt": number, "pid": os.getpid(), "title": task.title,
              "claimed": time.time(), "expires": time.time() + (lease or bus.lease)}
    slots.create_own(own / name, json.dumps(record))
    if durable.symlink(f"{slots.AGENTS}/{agent}/{name}", bus.state / name):
        return number
    (own / name).unlink(missing_ok=True)
    return None


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
    number = _take(bus, task, agent, lease)
    won = bus.get(tid)
    if number is None or won.attempt != number or won.claimed_by != agent:
        raise FleetError("another worker claimed it just now")
    return won


def holding(bus: Store, tid: int, agent: str) -> Task:
    """The task, if `agent` holds its current attempt, live. A spec broken by hand after the
    claim does not take it away: the claim is the truth, and the holder may renew or finish."""
    task = bus.get(tid)
    if task.status == "cancelled":
        raise FleetError(f"{task.name} was cancelled{why_cancelled(task)}; '{agent}' does not hold it any more",
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
    """Extend the lease: a renewal file of its own (slots.py), which counts if made while the lease
    held; a lease is only ever extended. (A claim an older version made, a regular file, is renewed
    in place, as it was.)"""
    task = holding(bus, tid, agent)
    claim = task.chain.holder
    expires = time.time() + (lease or bus.lease)
    name = f"{task.name}.claim-{task.attempt}"
    if claim.trusted:
        durable.replace(bus.state / name, json.dumps({**claim.record, "expires": expires}))
    else:
        own = bus.own(agent)
        m = 1
        while os.path.lexists(own / f"{name}.lease-{m}"):
            m += 1
        durable.replace(own / f"{name}.lease-{m}", json.dumps({"expires": expires}))
    renewed = bus.get(tid)
    if renewed.claimed_by != agent or renewed.attempt != task.attempt or not renewed.expires \
            or renewed.expires <= time.time():
        holding(bus, tid, agent)  # (says why)
        raise FleetError(f"the lease of {task.name} (attempt {task.attempt}) lapsed before it was renewed",
                         "claim it first with `git fleet-task claim`")
    return renewed


def release(bus: Store, tid: int, agent: str) -> Task:
    """Give the task back: its claim's record is renamed away (to NAME.released, kept as its
    history), so that the attempt counts for nothing from now on and no later writing brings it
    back as it was (a file written again is newer than any attempt made meanwhile)."""
    task = holding(bus, tid, agent)
    claim = task.chain.holder
    name = f"{task.name}.claim-{task.attempt}"
    if claim.trusted:
        durable.replace(bus.state / name, json.dumps({**claim.record, "released": True}))
    else:
        own = bus.own(agent)
        os.replace(own / name, own / f"{name}.released")
        fd = os.open(own, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return bus.get(tid)
