"""The bus's files and the reading of them: where they are, and every task as they say it is.

Store holds the paths and the caches (specs by (mtime, size), results by name, the listing of
tasks/), which every operation shares; the operations themselves (adding.py, claims.py,
ending.py, removal.py, plan.py) are functions that take it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .. import durable
from ..errors import FleetError, UsageError
from . import slots
from .slots import Chain, Scan
from .specs import ENDED, SPEC, Task, ended_at, field_value, front_matter, parse_id, raw_depends

STATE = ".state"
DEFAULT_LEASE = 30 * 60


def settled(mtime_ns: int, read_ns: int) -> bool:
    """git's racy rule (Documentation/technical/racy-git.txt): a file changed within the timestamp
    tick it was read in keeps its time and, changed in place, its size, so what was read from it
    is trusted only when its time was older than the reading by more than a tick. Where times fall
    on whole seconds the file system counts in seconds (two on FAT); elsewhere the tick is the
    kernel's clock tick, a few milliseconds."""
    tick = 2_000_000_000 if mtime_ns % 1_000_000_000 == 0 else 100_000_000
    return mtime_ns < read_ns - tick


class Store:
    """The bus at `root`, read: tasks/ (specs), tasks/.state/ (ids, claims), results/. Its
    underscored members are the bus package's own, for its operations; callers use Bus."""

    def __init__(self, root: Path, lease: int = DEFAULT_LEASE):
        self.root = root
        self.tasks = root / "tasks"
        self.results = root / "results"
        self.plan = root / "master_plan.md"
        self.state = self.tasks / STATE
        self.lease = lease
        # parsed specs by path, keyed by (mtime, size) and when they were read (see settled): only the
        # orchestrator edits them; results by name: linked once. A long-running worker reads each once.
        self._specs: dict[Path, tuple[tuple[int, int], int, dict[str, Any], str]] = {}
        self._outcomes: dict[str, tuple[str, str | None]] = {}
        self._broken: dict[str, str] = {}  # task name -> why its result cannot be read
        self._listing: tuple[int, int, dict[int, Path]] | None = None
        self._ends: dict[str, Chain] = {}  # tasks ended by an agent's end: final, read once

    def ensure(self) -> None:
        for d in (self.tasks, self.results, self.state):
            d.mkdir(parents=True, exist_ok=True)
        # live claim state never becomes tracked (git add -A), so it cannot change with a branch
        ignore = self.state / ".gitignore"
        if not ignore.exists():
            durable.create(ignore, "# git-fleet's live claim state: never tracked\n*\n")
        for d in (self.state / slots.AGENTS, self.results / slots.AGENTS):
            if os.path.islink(d) or not d.is_dir():
                slots.real_dir(d)

    def agent_writes(self, agent: str) -> tuple[list[Path], list[Path]]:
        """For its sandbox: the directories `agent` may write (its own, made here), and those where it may only make symlinks."""
        self.ensure()
        if not slots.AGENT_NAME.match(agent) or ".." in agent:
            raise UsageError(f"'{agent}' is not a valid agent name")
        return slots.agent_writes(self.state, self.results, agent)

    def own(self, agent: str, results: bool = False) -> Path:
        """The agent's own directory (tasks/.state/agents/A, or results/agents/A), made if need be
        (where this process may: a sandboxed agent's is made before it starts)."""
        return slots.own_dir(self.results if results else self.state, agent, self.ensure)

    # -- reading ----------------------------------------------------------------------------------

    def _spec_paths(self) -> dict[int, Path]:
        """The spec files by id; listed again when the tasks directory itself changed (a spec
        added, renamed or removed changes its mtime), or may have within the tick it was listed in."""
        try:
            key = os.stat(self.tasks).st_mtime_ns
        except OSError:
            return {}
        if self._listing is not None and self._listing[0] == key and settled(key, self._listing[1]):
            return self._listing[2]
        listed = time.time_ns()
        found: dict[int, Path] = {}
        for entry in os.scandir(self.tasks):
            m = SPEC.match(entry.name)
            if m:
                found[int(m.group(1))] = Path(entry.path)
        self._listing = (key, listed, found)
        return found

    def _spec(self, path: Path) -> tuple[dict[str, Any], str]:
        st = os.stat(path)
        key = (st.st_mtime_ns, st.st_size)
        hit = self._specs.get(path)
        if hit is not None and hit[0] == key and settled(key[0], hit[1]):
            return hit[2], hit[3]
        read = time.time_ns()
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            raise FleetError(f"{path}:{line}: not UTF-8 text (byte {e.start} is {raw[e.start]:#04x})") from None
        meta, body = front_matter(path, text)
        self._specs[path] = (key, read, meta, body)
        return meta, body

    def _outcome(self, name: str, result: Path) -> tuple[str, str | None]:
        if name not in self._outcomes:
            try:
                meta, _ = front_matter(result, result.read_text(encoding="utf-8"))
                status = meta.get("status")
                self._outcomes[name] = (status if status in ENDED else "done",
                                        meta.get("agent") or meta.get("holder"))
            except (FleetError, OSError, UnicodeDecodeError) as e:
                # neither done nor claimable: how it ended is not known until the file is fixed
                why = e.message if isinstance(e, FleetError) else getattr(e, "strerror", None) or str(e)
                self._broken[name] = f"{result}: the result cannot be read ({why})"
                return "invalid", None
        return self._outcomes[name]

    def _scan(self, only: str | None = None) -> Scan:
        """The attempt slots of each task (or of task `only`) and the names in results/."""
        return slots.scan(self.state, self.results, only)

    def _chain(self, name: str, scan: Scan) -> Chain:
        """Which of the attempts at task `name` count, and what holds or ended it (slots.walk)."""
        if name in self._ends:
            return self._ends[name]
        chain = slots.read_chain(self.state, name, scan.slots.get(name, []), self._removing)
        if chain.end is not None and chain.end.agent is not None:
            self._ends[name] = chain
        return chain

    def _load(self, tid: int, path: Path, scan: Scan) -> Task:
        """The task of the spec at `path`; FileNotFoundError if the spec is gone since it was
        listed (rm deleted it): a task that is not there any more, not one that cannot be read."""
        task = Task(tid, path)
        try:
            meta, body = self._spec(path)
            task.title = meta.get("title", "")
            task.agent = meta.get("agent") or None
            task.depends = [field_value(path, "depends", parse_id, d) for d in meta.get("depends", [])]
            task.priority = field_value(path, "priority", int, meta.get("priority", 0) or 0)
            task.created = meta.get("created", "")
            task.body = body
        except FileNotFoundError:
            raise
        except (FleetError, ValueError, UnicodeDecodeError, OSError) as e:
            task.error = e.message if isinstance(e, FleetError) else f"{path}: {e}"
            task.status = "invalid"
            raw = raw_depends(path)  # what it waits for still counts (rm must not delete that)
            if raw is None and not path.exists():
                raise FileNotFoundError(path) from None
            task.depends, task.depends_known = raw or [], raw is not None
        self._state(task, scan)
        return task

    def _state(self, task: Task, scan: Scan) -> None:
        """Its claim and its outcome, from the results and the attempts."""
        chain = task.chain = self._chain(task.name, scan) if task.name in scan.slots else Chain()
        # (the latest attempt that counted: one released since is still the latest, and no one holds)
        latest = max([*chain.history, *([chain.holder] if chain.holder else [])], key=lambda a: a.number, default=None)
        task.attempt = latest.number if latest is not None else 0
        if scan.results.get(f"{task.name}-result.md"):  # a regular file: the orchestrator's, or an older version's
            result = self.results / f"{task.name}-result.md"
            task.result = result
            task.status, task.claimed_by = self._outcome(task.name, result)
            if task.name in self._broken:
                task.error = self._broken[task.name]
            return
        if chain.end is not None:
            self._ended(task, chain.end)
            return
        claim = chain.holder
        if claim is None or claim.released or latest is not claim and latest is not None and latest.released:
            return
        # (a spec broken by hand stays invalid, but its holder is known: it may still finish)
        if claim.removed:  # a rm deciding: the task is held off workers while it runs
            task.expires = claim.expires or None
            if task.status != "invalid":
                task.status = "claimed"
            return
        task.claimed_by = claim.agent
        task.expires = claim.expiry_at(time.time_ns())
        if task.status != "invalid":
            task.status = "claimed" if task.expires > time.time() else "open"
        if not task.title:
            task.title = claim.title

    def _ended(self, task: Task, end: slots.Attempt) -> None:
        if end.agent is None:  # the orchestrator's cancel, its result not linked yet (or its cancel killed)
            task.status, task.claimed_by = "cancelled", None
            task.result = self.results / f"{task.name}-result.md"
            return
        task.attempt = end.ends or task.attempt
        real = self.results / slots.AGENTS / end.agent / f"{task.name}-result.md"
        link = self.results / f"{task.name}-result.md"
        try:
            shown = link if slots.agent_of(os.readlink(link), link.name) == end.agent else real
        except OSError:
            shown = real
        task.result = shown
        task.status, task.claimed_by = self._agent_outcome(task.name, end, shown)
        if task.name in self._broken:
            task.error = self._broken[task.name]
        if not task.title:
            task.title = end.title

    def _agent_outcome(self, name: str, end: slots.Attempt, shown: Path) -> tuple[str, str | None]:
        """How an agent's end says its task ended; its result file must read (as any result)."""
        if name not in self._outcomes:
            try:
                raw, _ = slots.read_beneath(self.results, slots.AGENTS, str(end.agent), f"{name}-result.md")
                front_matter(shown, raw.decode("utf-8"))
                self._outcomes[name] = (str(end.status), end.agent)
            except (FleetError, OSError, UnicodeDecodeError) as e:
                why = e.message if isinstance(e, FleetError) else getattr(e, "strerror", None) or str(e)
                self._broken[name] = f"{shown}: the result cannot be read ({why})"
                return "invalid", None
        return self._outcomes[name]

    def _removing(self, name: str, attempt: int) -> bool:
        return slots.removing(self.state / f"{name}.claim-{attempt}")

    def all(self) -> list[Task]:
        """Every task, but those removed: a spec left by a rm killed after it decided (its result
        says removed) is deleted here, finishing that rm's work."""
        scan = self._scan()
        tasks = []
        for tid, path in sorted(self._spec_paths().items()):
            try:
                tasks.append(self._load(tid, path, scan))
            except FileNotFoundError:
                self._listing = None  # deleted since it was listed
        for t in tasks:
            if t.status == "removed":
                try:
                    t.path.unlink(missing_ok=True)
                    self._listing = None
                except OSError:
                    pass  # (a bus this user cannot write: still not listed)
        return [t for t in tasks if t.status != "removed"]

    def get(self, tid: int) -> Task:
        path = self._spec_paths().get(tid)
        if path is not None:
            try:
                return self._load(tid, path, self._scan(f"task-{tid:03d}"))
            except FileNotFoundError:
                self._listing = None  # deleted since it was listed
        self._gone(tid)
        raise UsageError(f"no task {tid} in {self.tasks}", "list them with `git fleet-task list`")

    def ended(self, tid: int, scan: Scan | None = None) -> tuple[str, Path] | None:
        """How task `tid` ended, as the bus counts it, its spec there or not: a regular result
        file (the orchestrator's), else the end of its attempts; None if it has not ended. Never
        by a name in results/ alone: a link there is an agent's, and counts for nothing."""
        task = Task(tid, self.tasks / f"task-{tid:03d}.md")
        self._state(task, scan or self._scan())
        return (task.status, task.result) if task.result is not None else None

    def _gone(self, tid: int) -> None:
        """Refuse a task whose spec is gone because it was removed (its result says so): the id
        was a task's, so that is its state, not a typo."""
        ended = self.ended(tid)
        if ended is not None and ended[0] == "removed":
            raise FleetError(f"task-{tid:03d} was removed{ended_at(ended[1])} (git fleet-task rm): its spec is "
                             f"deleted", f"see {ended[1]}; its id is not given out again")

    def dependents(self, tid: int) -> list[Task]:
        """The tasks that wait for `tid` and have not ended."""
        return [t for t in self.all() if tid in t.depends and t.result is None]
