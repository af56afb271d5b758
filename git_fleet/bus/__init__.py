"""The coordination bus: task specs, claims, leases and results as files.

The rules that keep it correct under many concurrent workers (the Maildir rules):
- one writer per file: the orchestrator writes a task spec once; workers never edit it;
- every file is written to a temporary name, fsynced, then linked or renamed into place, and its
  directory fsynced (durable.py), so a reader never sees half a file and a crash loses none;
- exclusive steps are exclusive creates (`link()` fails if the name exists, never a rename that
  could overwrite): an id is reserved by creating `.state/id-N`; attempt k of a task is claimed
  by creating `.state/task-N.claim-k`; an expired lease is taken over by creating attempt k+1,
  so exactly one worker gets it; the outcome is `results/task-N-result.md`, linked into place,
  so a task ends once, and only by the worker holding its current attempt, or by the orchestrator
  cancelling it (status: cancelled) or removing it (status: removed, then its spec is deleted):
  whichever links first decides, the other is told so;
- rm keeps workers off a task while it decides by a claim of its own (`removed`), flocked for as
  long as rm runs: the kernel drops the lock when rm ends however it ends, so a claim of a rm
  that was killed before it decided counts for nothing (the task is as it was), and one killed
  after it decided leaves a spec the next scan (or rm) deletes;
- a result that cannot be recorded as the outcome (the task was cancelled, taken over, or ended
  meanwhile) is never dropped: it is kept beside it, `results/task-N-unrecorded-AGENT-K.md`;
- live state sits in `tasks/.state/` and `results/`, never in tracked files, so it does not
  depend on which branch a worktree has checked out.

Its shape, one module per idea:
- specs.py    the task files' format: front matter read and written, ids, Task;
- store.py    Store: the bus's paths and caches, and reading every task as its files say;
- adding.py   add: an id by exclusive create, the spec written once, its dependencies checked;
- claims.py   claim, adopt, renew, release: claims, leases and their takeover;
- ending.py   finish (done, fail) and cancel: the result linked once; results kept aside;
- removal.py  rm: a task added by mistake, ended as removed, its spec deleted;
- plan.py     master_plan.md.

Why a Store and functions rather than one class cut in pieces (mixins): the one thing the
operations share is the state of reading the bus, its paths and caches, so that is the only
object (Store); each operation is a function of it in its own module, which imports what it
uses (ending.py uses claims.py to check who holds a task; nothing else crosses), so reading one
needs neither the others nor a method resolution order. Bus is the facade callers hold: a Store
(so `bus.root`, `bus.all()`, `bus.get()` are as they were) whose other methods only delegate,
the whole surface in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import adding, claims, ending, plan, removal, specs
from .specs import Task, front_matter, parse_id
from .store import Store

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..notify import Watcher

__all__ = ["Bus", "Task", "front_matter", "parse_id"]


class Bus(Store):
    """The bus at `root`: Store's reading (ensure, all, get, ended, dependents), and the
    operations, each documented where it is done."""

    def forget(self) -> None:
        """Read the listing of tasks/ again next time (the watch, told it changed)."""
        self._listing = None

    def watched(self) -> list[Path]:
        """The directories whose changes are the bus's."""
        return [self.tasks, self.state, self.results]

    # -- the orchestrator's: adding, ending and removing tasks, the plan ---------------------------

    def add(self, title: str, *, agent: str | None = None, body: str = "", depends: list[int] | None = None,
            priority: int = 0) -> Task:
        return adding.add(self, title, agent=agent, body=body, depends=depends, priority=priority)

    def cancel(self, tid: int, reason: str | None = None) -> Task:
        return ending.cancel(self, tid, reason)

    def remove(self, tid: int) -> Task:
        return removal.remove(self, tid)

    def removable(self) -> list[Task]:
        return removal.removable(self)

    def after(self, task: Task, tasks: list[Task]) -> str:
        return plan.waits_for(self, task, tasks)

    def write_plan(self) -> Path:
        return plan.write_plan(self)

    # -- a worker's: claims, leases, results ---------------------------------------------------------

    def claim(self, agent: str, lease: int | None = None) -> Task | None:
        return claims.claim(self, agent, lease)

    def claim_waiting(self, agent: str, lease: int | None = None, warn: Callable[[str], None] | None = None) -> Task:
        return claims.claim_waiting(self, self.watcher(), agent, lease)  # (files: nothing to wait out)

    def adopt(self, tid: int, file: str, spec: str, agent: str, lease: int | None = None) -> Task:
        return claims.adopt(self, tid, file, spec, agent, lease)

    def renew(self, tid: int, agent: str, lease: int | None = None) -> Task:
        return claims.renew(self, tid, agent, lease)

    def release(self, tid: int, agent: str) -> Task:
        return claims.release(self, tid, agent)

    def finish(self, tid: int, agent: str, body: str, *, failed: bool = False) -> Task:
        return ending.finish(self, tid, agent, body, failed=failed)

    def unrecorded(self, task: Task) -> list[Path]:
        return ending.unrecorded(self, task)

    def why_cancelled(self, task: Task) -> str:
        return specs.why_cancelled(task)

    def watcher(self) -> Watcher:
        """A notify.Watcher of the bus: the hint that something changed; the caller's rescan is the
        truth (inotify misses events on network and some container mounts)."""
        # imported here for start-up speed: notify loads ctypes, which only a waiting claim needs
        from .. import notify

        self.ensure()
        return notify.Watcher([self.tasks, self.state, self.results])
