"""The shared bus's steps, each a compare-and-swap of a task's ref on the remote, tried again on
a fresh view when another machine's step landed first: add, claim (and the wait for one), renew,
release, done, fail, cancel and rm."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .. import durable, holds, records
from ..bus.specs import CANCELLED, ENDED, Task, one_line, render
from ..errors import FleetError, UsageError
from ..gateway import meeting
from ..gateway.meeting import Update
from . import folding
from .view import IDS, KEPT, Entry, View

if TYPE_CHECKING:
    from . import RemoteBus

TRIES = 60  # compare-and-swaps lost in a row before giving up (each lost one means another landed)
POLL = 2.0  # seconds between a machine's fetches while a claim waits (git config fleet.poll)
POLL_MOST = 8.0  # the longest wait between them, backed off to while nothing changes
SPREAD = 8  # after a lost claim, the next is picked among this many of the first tasks, at random


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _busy(what: str) -> FleetError:
    return FleetError(f"{what}: the shared bus kept changing under {TRIES} tries in a row", "try again")


def _views(bus: RemoteBus) -> Iterator[tuple[View, bool]]:
    """The views a step is tried on, and whether each is fresh: first what this clone knows (no
    round trip: a compare-and-swap on a stale value only loses), then fetched ones. A step is
    refused only on a fresh view."""
    yield bus.view(), False
    for _ in range(TRIES):
        yield bus.refresh(), True


def add(bus: RemoteBus, title: str, *, agent: str | None, body: str, depends: list[int], priority: int) -> Task:
    """A new task: its id is the ids ref's next one, taken with the task's ref in one atomic push."""
    if not one_line(title):
        raise UsageError("a task needs a title")
    for view, fresh in _views(bus):
        if depends and not fresh:
            continue  # (what it waits for is judged on the remote's state; a cancel or rm of it moves the ids ref)
        for d in depends:
            _dependency(view, d)
        tid = view.next_id()
        meta = {"id": tid, "title": one_line(title), "agent": agent, "depends": [str(d) for d in depends],
                "priority": priority, "created": _now()}
        opened = meeting.make_commit(bus.repo, records.new("open", task=tid, machine=bus.machine).message(),
                                     {"spec.md": render(meta, body or title).encode()}, None)
        ids = meeting.make_commit(bus.repo, records.new("ids", next=tid + 1, machine=bus.machine).message(), {},
                                  view.ids)
        if bus.push([Update(meeting.SHARED + IDS, ids, view.ids), Update(bus.ref(tid), opened, None)]).won:
            return _after(bus, tid, opened)
    raise _busy("the task was not added")


def _dependency(view: View, d: int) -> None:
    entry = view.entries.get(d)
    if entry is None:
        raise UsageError(f"task {d} (a dependency) does not exist", "list them with git fleet-task list")
    if entry.rec.op in ENDED:
        raise FleetError(f"task-{d:03d} (a dependency) {'was' if entry.rec.op == 'removed' else 'is'} "
                         f"{entry.rec.op}: a task that waits for it could never be claimed",
                         f"add it without --depends {d}")


def _after(bus: RemoteBus, tid: int, new: str, *, seen: bool = False) -> Task:
    """The task as its own push (of `new`) that landed made it: no fetch (one that began before
    the push may still bring the value before it)."""
    view = bus.view()
    if seen:
        view.first_seen(new)
    view.entries[tid] = view.read_tip(tid, new)
    return view.task(view.entries[tid])


# -- claims -------------------------------------------------------------------------------------------

def claimable(view: View, agent: str) -> list[Task]:
    """What `agent` may claim, first first: open (or its lease lapsed, as seen here), for it or
    for anyone, what it waits for done; by priority, then id."""
    done = {tid for tid, e in view.entries.items() if e.rec.op == "done"}
    tasks = [view.task(e) for e in view.entries.values() if e.tip is not None and not e.rec.ended]
    can = [t for t in tasks if t.status == "open" and t.agent in (None, agent) and set(t.depends) <= done]
    return sorted(can, key=lambda t: (-t.priority, t.id))


def _others_holding(view: View, agent: str) -> int:
    return sum(1 for e in view.entries.values() if e.rec.holds and e.tip is not None and e.rec.agent != agent)


def claim(bus: RemoteBus, agent: str, lease: int | None, view: View | None = None) -> Task | None:
    """Claim the next task for `agent`: the next attempt, pushed as a compare-and-swap on the task's
    ref. A lost one (another worker's landed first) moves on to another task, picked at random
    among the first few so that many workers spread out, and fetches again every second loss."""
    seconds = lease or bus.lease
    view, fresh = (view, True) if view is not None else (bus.view(), False)
    skip: set[int] = set()
    lost = 0
    for _ in range(2 * TRIES):
        can = [t for t in claimable(view, agent) if t.id not in skip]
        if not can:
            if fresh and not skip:
                return None
            view, fresh, skip = bus.refresh(), True, set()
            continue
        away = holds.refused(bus.repo, bus.remote, agent, bus.machine)
        if away and not fresh:
            view, fresh, skip = bus.refresh(), True, set()
            continue
        if away:
            raise FleetError(away, "nothing was claimed; this machine's copy of the agent stops here")
        # many workers at once (claims by others in view, or one lost already): spread over the
        # first few of the same priority, rather than all racing for the first
        spread = SPREAD if lost else min(SPREAD, 1 + _others_holding(view, agent))
        pick = random.choice([t for t in can[:spread] if t.priority == can[0].priority])
        entry = view.entries[pick.id]
        rec = records.new("claim", task=pick.id, attempt=entry.rec.attempt + 1, agent=agent, machine=bus.machine,
                          lease=seconds)
        new = meeting.make_tree_commit(bus.repo, rec.message(), entry.tree, entry.tip)
        if bus.push([Update(bus.ref(pick.id), new, entry.tip), *_beat(bus, agent)]).won:
            return _after(bus, pick.id, new, seen=True)
        lost += 1
        skip.add(pick.id)
        if lost % 2 == 0 or not fresh:
            view, fresh, skip = bus.refresh(), True, set()
    raise _busy("nothing was claimed")


def claim_waiting(bus: RemoteBus, agent: str, lease: int | None, warn: Callable[[str], None] | None = None) -> Task:
    """Claim, waiting until a task can be: one fetch per machine every `bus.poll` seconds at most
    (the workers of a clone share it), backed off to POLL_MOST while nothing changes, and sooner
    when a lease seen here lapses. A remote that does not answer is waited out the same way, said
    once (`warn`)."""
    wait, last, said = bus.poll, None, False
    while True:
        try:
            task = claim(bus, agent, lease, bus.refresh(max_age=bus.poll))
        except meeting.Unreachable as e:
            task = None
            if warn is not None and not said:
                warn(f"{e.message}; waiting for it to answer")
                said = True
        if task is not None:
            return task
        view = bus.view()
        wait = min(wait * 1.5, POLL_MOST) if view.signature == last else bus.poll
        last = view.signature
        now = time.time()
        lapsing = [t.expires - now for t in (view.task(e) for e in view.entries.values() if e.rec.holds)
                   if t.expires and t.expires > now]
        time.sleep(max(0.05, min([wait, *lapsing])))


# -- a holder's steps -----------------------------------------------------------------------------------

def _held(bus: RemoteBus, view: View, tid: int, agent: str) -> Entry:
    """The task's entry if `agent` holds it; else why not."""
    entry = view.entries.get(tid)
    if entry is None:
        raise UsageError(f"no task {tid} on the shared bus ({bus.remote})", "list them with `git fleet-task list`")
    rec, name = entry.rec, f"task-{tid:03d}"
    if rec.op == "cancelled":
        why = bus.why_cancelled(view.task(entry))
        raise FleetError(f"{name} was cancelled{why}; '{agent}' does not hold it any more",
                         "stop working on it: it is not to be done; git fleet-task claim takes the next task")
    if rec.ended:
        raise FleetError(f"{name} is {rec.op} already", f"see git fleet-task show {tid}")
    if rec.holds and rec.agent == agent and rec.machine in (None, bus.machine):
        return entry
    if rec.holds and rec.agent == agent:
        # its claim, made on another machine: this one's now, if the agent was moved here (its hold)
        hold = holds.read(bus.repo, bus.remote, agent)
        if hold is not None and hold.machine == bus.machine:
            return entry
    if rec.holds:
        where = f" on machine {rec.machine}" if rec.machine else ""
        state = f"{name} is claimed by '{rec.agent}' (attempt {rec.attempt}){where}"
    else:
        state = f"{name} is not claimed" if not rec.attempt else f"the claim of {name} (attempt {rec.attempt}) was released"
    raise FleetError(f"{state}; '{agent}' does not hold it", "claim it first with `git fleet-task claim`")


def step(bus: RemoteBus, tid: int, agent: str, op: str, *, lease: int | None = None, body: str | None = None) -> Task:
    """renew, release, done or failed, by the holder: a compare-and-swap on its own claim, so a
    holder whose claim was taken over, cancelled or ended learns it here. A result refused is kept
    aside on the remote (refs/fleet/bus/kept/), never dropped."""
    try:
        for view, fresh in _views(bus):
            try:
                entry = _held(bus, view, tid, agent)
                away = holds.refused(bus.repo, bus.remote, agent, bus.machine)
                if away:
                    raise FleetError(away, f"nothing was recorded; the agent's copy there carries on with task-{tid:03d}")
            except FleetError:
                if fresh:
                    raise
                continue
            rec = records.new(op, task=tid, attempt=entry.rec.attempt, agent=agent, machine=bus.machine,
                              lease=(lease or bus.lease) if op == "renew" else 0)
            if records.follows(entry.rec, rec, bus.machine) is not None:  # (as the server's hook judges it)
                raise FleetError(str(records.follows(entry.rec, rec, bus.machine)))
            if body is None:
                new = meeting.make_tree_commit(bus.repo, rec.message(), entry.tree, entry.tip)
            else:
                new = meeting.make_commit(bus.repo, rec.message(), {"spec.md": entry.spec,
                                                                     "result.md": _result(view, entry, op, agent, body)},
                                          entry.tip)
            if bus.push([Update(bus.ref(tid), new, entry.tip), *_beat(bus, agent)]).won:
                task = _after(bus, tid, new, seen=op == "renew")
                if rec.ended:
                    folding.fold(bus)
                return task
        raise _busy(f"task-{tid:03d} was not changed")
    except meeting.Unreachable as e:
        if body is not None:
            e.hint = "\n".join([*(e.hint.split("\n") if e.hint else []), _keep_here(bus, tid, agent, op, body)])
        raise
    except FleetError as e:
        if body is not None:
            e.hint = "\n".join([*(e.hint.split("\n") if e.hint else []), _keep(bus, tid, agent, op, body)])
        raise


def _beat(bus: RemoteBus, agent: str) -> list[Update]:
    beat = holds.beat(bus.repo, bus.remote, agent, bus.machine, str(bus.common))
    return [beat] if beat is not None else []


def _result(view: View, entry: Entry, op: str, agent: str, body: str) -> bytes:
    task = view.task(entry)
    meta = {"task": task.name, "title": task.title, "status": op, "agent": agent, "attempt": entry.rec.attempt,
            "finished": _now()}
    return render(meta, body).encode()


def _keep_here(bus: RemoteBus, tid: int, agent: str, op: str, body: str) -> str:
    """A result the remote could not be asked to take, kept in this clone for sending again."""
    path = bus.results / f"task-{tid:03d}-unsent-{agent}.md"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        durable.replace(path, body.rstrip("\n") + "\n")
    except OSError as e:
        return f"the result was not sent, nor kept here ({e.strerror}): keep the file or text you gave yourself"
    again = (f"git fleet-task done {tid} --result-file {path}" if op == "done"
             else f'git fleet-task fail {tid} --reason "$(cat {path})"')
    return f"the result was not sent; it is kept at {path}: send it when the remote answers, with {again}"


def _keep(bus: RemoteBus, tid: int, agent: str, op: str, body: str) -> str:
    """Keep a result that could not be recorded at refs/fleet/bus/kept/N/AGENT-K-NONCE; the hint."""
    try:
        view = bus.view()
        entry = view.entries.get(tid)
        if entry is None:
            return "this result was not kept: there is no such task"
        rec = records.new("kept", task=tid, attempt=entry.rec.attempt, agent=agent, machine=bus.machine)
        meta = {"task": f"task-{tid:03d}", "status": op, "agent": agent, "finished": _now()}
        new = meeting.make_commit(bus.repo, rec.message(), {"result.md": render(meta, body).encode()}, None)
        ref = f"{meeting.SHARED}{KEPT}{tid}/{agent}-{rec.attempt}-{rec.nonce}"
        if not bus.push([Update(ref, new, None)]).won:
            return "this result could not be kept aside on the remote: keep the file or text you gave yourself"
    except FleetError as e:
        return f"this result could not be kept aside ({e.message}): keep the file or text you gave yourself"
    return f"nothing is lost: this result is kept on the remote at {ref} (git fleet-task show {tid})"


# -- the orchestrator's ----------------------------------------------------------------------------------

def cancel(bus: RemoteBus, tid: int, reason: str | None) -> Task:
    for _ in range(TRIES):
        view = bus.refresh()
        entry = view.entries.get(tid)
        if entry is None:
            raise UsageError(f"no task {tid} on the shared bus ({bus.remote})", "list them with `git fleet-task list`")
        if entry.rec.ended:
            raise FleetError(f"task-{tid:03d} {'was' if entry.rec.op == 'removed' else 'is'} {entry.rec.op} already; "
                             "there is nothing to cancel", f"see git fleet-task show {tid}")
        task = view.task(entry)
        holder = entry.rec.agent if entry.rec.holds else None
        meta = {"task": task.name, "title": task.title, "status": "cancelled", "holder": holder, "finished": _now()}
        rec = records.new("cancelled", task=tid, attempt=entry.rec.attempt, machine=bus.machine, reason=reason)
        new = meeting.make_commit(bus.repo, rec.message(), {
            "spec.md": entry.spec, "result.md": render(meta, (reason or "").strip() or CANCELLED).encode()}, entry.tip)
        if bus.push([Update(bus.ref(tid), new, entry.tip), _ids_moved(bus, view)]).won:
            task = _after(bus, tid, new)
            folding.fold(bus)
            return task
    raise _busy(f"task-{tid:03d} was not cancelled")


def seed(bus: RemoteBus, after: int) -> None:
    """Ids on the remote start after `after` (the file bus's last, when a fleet starts to span
    machines), if no task was added there yet: an id is never given out twice."""
    view = bus.refresh()
    if view.ids is not None or after < 1:
        return
    rec = records.new("ids", next=max(after + 1, view.next_id()), machine=bus.machine)
    bus.push([Update(meeting.SHARED + IDS, meeting.make_commit(bus.repo, rec.message(), {}, None), None)])


def _ids_moved(bus: RemoteBus, view: View) -> Update:
    """The ids ref moved on (its next id kept), with a cancel or rm in one atomic push: an add
    that checked its dependencies before then loses its compare-and-swap, and checks again."""
    rec = records.new("ids", next=view.next_id(), machine=bus.machine)
    return Update(meeting.SHARED + IDS, meeting.make_commit(bus.repo, rec.message(), {}, view.ids), view.ids)


def remove(bus: RemoteBus, tid: int) -> Task:
    for _ in range(TRIES):
        view = bus.refresh()
        task = bus.get(tid)
        entry = view.entries[tid]
        if entry.rec.ended:
            raise FleetError(f"{task.name} is {task.status}; its spec stays with its result")
        if entry.rec.attempt:
            raise FleetError(f"{task.name} has been claimed (attempt {entry.rec.attempt})",
                             f"cancel it instead: git fleet-task cancel {tid}")
        waiting = [t for t in bus.all() if tid in t.depends and t.result is None]
        if waiting:
            raise FleetError(f"{', '.join(t.name for t in waiting)} depend{'s' if len(waiting) == 1 else ''} on "
                             f"{task.name}", "cancel or remove them first")
        rec = records.new("removed", task=tid, machine=bus.machine)
        new = meeting.make_tree_commit(bus.repo, rec.message(), entry.tree, entry.tip)
        if bus.push([Update(bus.ref(tid), new, entry.tip), _ids_moved(bus, view)]).won:
            return task
    raise _busy(f"task-{tid:03d} was not removed")
