"""The bus across machines: the same tasks, claims, leases and results as the file bus (bus/),
kept on the fleet's remote as refs, so that every clone of every machine sees one bus.

The rules that keep it correct:
- every change is a compare-and-swap on the remote: a push of a task's ref with the value it
  must still have (gateway/meeting.py); of two workers claiming one task, one push lands and the
  other is told its value is stale, so a claim is exactly-once across machines, decided by the
  remote, never by a local file another machine cannot see;
- each step is a commit on the task's ref (records.py), so the ref says who holds it, which
  attempt, and how it ended; a holder whose claim was taken over finds its ref moved, and its
  done is refused (the result is kept aside, under refs/fleet/bus/kept/, never dropped);
- a lease is judged by each observer on its own clock: a claim seen unchanged for longer than
  its lease may be taken over, once, by a compare-and-swap on that very claim; a renewal is a new
  commit, so every observer counts again from when it saw it;
- nothing is recorded here before the remote accepted it: with the remote away, claim, done and
  add refuse, and what is shown is the last fetched state, with its age;
- ended tasks are folded, in batches, into one ref (the log), so the remote holds about as many
  refs as tasks in flight: a push receives them all.

Its shape: records.py (the steps' format and the rule of which may follow which), view.py (what
this clone knows, read into Tasks), steps.py (add, claim, renew, release, done, fail, cancel,
rm), folding.py (the log). RemoteBus is the facade, with Bus's surface.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..bus import plan
from ..bus.specs import Task, why_cancelled
from ..errors import FleetError, UsageError
from ..gateway import meeting
from ..machines import PREFIXES
from . import folding, steps
from .steps import POLL
from .view import TASKS, Entry, View

if TYPE_CHECKING:
    from collections.abc import Callable

    import pygit2


class RemoteBus:
    """The shared bus on `remote`, as seen from the clone whose repository is `repo`."""

    def __init__(self, root: Path, lease: int, repo: pygit2.Repository, cwd: Path, common: Path, remote: str,
                 machine: str, poll: float = POLL, key: Path | None = None, place: Path | None = None):
        self.root = root
        self.tasks = root / "tasks"
        self.results = root / "results"
        self.plan = root / "master_plan.md"
        self.lease = lease
        self.repo, self.cwd, self.remote, self.machine, self.poll = repo, cwd, remote, machine, poll
        self.key = key  # the machine's, which signs its pushes where the remote asks
        self.common = common
        self.place = place or common / "fleet" / "remote" / remote  # (machines.place)
        self.stamp = self.place / "fetched"  # its time: when the remote last answered a fetch here
        self.stale: str | None = None  # why what is shown is the last fetched state, not the remote's now
        self._cache: dict[str, Entry] = {}
        self._view: View | None = None

    # -- what this clone knows, and asking the remote again ----------------------------------------

    def view(self) -> View:
        if self._view is None:
            with meeting.reading(self.stamp):
                self._view = View(self.repo, self.remote, self.root, self.place / "seen", self._cache)
        return self._view

    def refresh(self, max_age: float = 0.0) -> View:
        """Fetch the shared bus (unless a fetch of this clone's answered within `max_age` seconds,
        or since this call began), then read it. Unreachable raises meeting.Unreachable."""
        began = time.time()
        fetched = meeting.fetched_at(self.stamp)
        if fetched is None or fetched < began - max_age:
            meeting.fetch(self.cwd, self.remote, PREFIXES, self.stamp, since=began - max_age)
        self._view = None
        return self.view()

    def read(self) -> View:
        """For reading only: fetched now if the remote answers, else the last fetched state, and
        why it is stale (`stale`)."""
        try:
            return self.refresh()
        except meeting.Unreachable as e:
            when = meeting.fetched_at(self.stamp)
            age = f"fetched {_age(time.time() - when)} ago" if when else "never fetched"
            self.stale = f"{e.message}; showing the last known state ({age})"
            self._view = None
            return self.view()

    def push(self, updates: list[meeting.Update]) -> meeting.Pushed:
        try:
            pushed = meeting.push(self.cwd, self.remote, updates, key=self.key)
        except meeting.Unreachable:
            pushed = self._landed_after_all(updates)
        if pushed.won:
            mine = meeting.tracking(self.remote)
            meeting.set_tracking(self.repo, self.stamp, {mine + u.ref.removeprefix(meeting.SHARED): u.new for u in updates})
            self._view = None
        elif pushed.refused:
            raise FleetError(f"remote '{self.remote}' refused the change: {pushed.refused}",
                             "nothing changed on the remote; its hook or its host decides what it accepts")
        return pushed

    def _landed_after_all(self, updates: list[meeting.Update]) -> meeting.Pushed:
        """A push whose outcome is not known (the connection dropped, the remote did not report):
        won if the remote holds what it sent, as a fetch says; else lost (tried again on what the
        fetch brought); unreachable if the fetch fails too."""
        self.refresh()
        now = meeting.refs_under(self.repo, meeting.tracking(self.remote))
        won = all(now.get(u.ref.removeprefix(meeting.SHARED)) == u.new for u in updates)
        return meeting.Pushed(won, lost=not won)

    @staticmethod
    def ref(tid: int) -> str:
        return f"{meeting.SHARED}{TASKS}{tid}"

    # -- reading, as Bus ----------------------------------------------------------------------------

    def ensure(self) -> None:
        pass  # (nothing to make here: the bus is on the remote)

    def forget(self) -> None:
        """Ask the remote again next time."""
        self._view = None

    def watched(self) -> list[Path]:
        """The directories whose changes are the bus's here: where fetches write what they bring."""
        return [self.common / meeting.tracking(self.remote)]

    def agent_writes(self, agent: str) -> tuple[list[Path], list[Path]]:
        """For its sandbox: this clone's record of what the remote holds and when it was fetched."""
        self.place.mkdir(parents=True, exist_ok=True)
        return [self.place], []

    def all(self) -> list[Task]:
        view = self._view or self.read()
        return [view.task(e) for _, e in sorted(view.entries.items()) if e.rec.op != "removed"]

    def get(self, tid: int) -> Task:
        view = self._view or self.read()
        entry = view.entries.get(tid)
        if entry is None:
            raise UsageError(f"no task {tid} on the shared bus ({self.remote})", "list them with `git fleet-task list`")
        if entry.rec.op == "removed":
            raise FleetError(f"task-{tid:03d} was removed (git fleet-task rm): its spec is deleted",
                             "its id is not given out again")
        return view.task(entry)

    def ended(self, tid: int) -> tuple[str, Path] | None:
        entry = self.view().entries.get(tid)
        if entry is None or not entry.rec.ended:
            return None
        return entry.rec.op, self.results / f"task-{tid:03d}-result.md"

    def dependents(self, tid: int) -> list[Task]:
        return [t for t in self.all() if tid in t.depends and t.result is None]

    def unrecorded(self, task: Task) -> list[Path]:
        entry = self.view().entries.get(task.id)
        return self.view().kept_files(entry) if entry is not None else []

    def why_cancelled(self, task: Task) -> str:
        return why_cancelled(task)

    def after(self, task: Task, tasks: list[Task]) -> str:
        return plan.waits_for(self, task, tasks)

    def write_plan(self) -> Path:
        self.refresh()
        folding.fold(self)
        return plan.write_plan(self)

    # -- the steps ------------------------------------------------------------------------------------

    def add(self, title: str, *, agent: str | None = None, body: str = "", depends: list[int] | None = None,
            priority: int = 0) -> Task:
        return steps.add(self, title, agent=agent, body=body, depends=depends or [], priority=priority)

    def claim(self, agent: str, lease: int | None = None) -> Task | None:
        return steps.claim(self, agent, lease)

    def claim_waiting(self, agent: str, lease: int | None = None, warn: Callable[[str], None] | None = None) -> Task:
        return steps.claim_waiting(self, agent, lease, warn)

    def renew(self, tid: int, agent: str, lease: int | None = None) -> Task:
        return steps.step(self, tid, agent, "renew", lease=lease)

    def release(self, tid: int, agent: str) -> Task:
        return steps.step(self, tid, agent, "release")

    def finish(self, tid: int, agent: str, body: str, *, failed: bool = False) -> Task:
        return steps.step(self, tid, agent, "failed" if failed else "done", body=body)

    def cancel(self, tid: int, reason: str | None = None) -> Task:
        return steps.cancel(self, tid, reason)

    def remove(self, tid: int) -> Task:
        return steps.remove(self, tid)

    def removable(self) -> list[Task]:
        tasks = self.all()
        waited = {d for t in tasks if t.result is None for d in t.depends}
        return [t for t in tasks if t.status == "open" and not t.attempt and t.id not in waited]

    def adopt(self, tid: int, file: str, spec: str, agent: str, lease: int | None = None) -> Task:
        """A teleported agent's task: on the shared bus it is the agent's wherever the agent runs,
        so nothing is claimed again; refused if the agent does not hold it any more."""
        task = self.get(tid)
        if task.claimed_by != agent or task.status != "claimed":
            raise FleetError(f"{task.name} is {task.status}" + (f" by '{task.claimed_by}'" if task.claimed_by else ""))
        return task


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)}s"
    if seconds < 5400:
        return f"{int(seconds // 60)}m"
    return f"{int(seconds // 3600)}h"
