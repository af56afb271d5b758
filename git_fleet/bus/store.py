"""The bus's files and the reading of them: where they are, and every task as they say it is.

Store holds the paths and the caches (specs by (mtime, size), results by name, the listing of
tasks/), which every operation shares; the operations themselves (adding.py, claims.py,
ending.py, removal.py, plan.py) are functions that take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from .. import durable
from ..errors import FleetError, UsageError
from .specs import CANCELLED, ENDED, SPEC, Task, ended_at, field_value, front_matter, one_line, parse_id, raw_depends

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
        # parsed specs by path, keyed by (mtime, size) and when they were read (see settled): only
        # the orchestrator edits them, rarely; results by name: linked once, never rewritten. A
        # long-running worker reads each once.
        self._specs: dict[Path, tuple[tuple[int, int], int, dict[str, Any], str]] = {}
        self._outcomes: dict[str, tuple[str, str | None]] = {}
        self._broken: dict[str, str] = {}  # task name -> why its result cannot be read
        self._listing: tuple[int, int, dict[int, Path]] | None = None

    def ensure(self) -> None:
        for d in (self.tasks, self.results, self.state):
            d.mkdir(parents=True, exist_ok=True)
        # live claim state never becomes tracked (git add -A), so it cannot change with a branch
        ignore = self.state / ".gitignore"
        if not ignore.exists():
            durable.create(ignore, "# git-fleet's live claim state: never tracked\n*\n")

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

    def _scan(self) -> tuple[dict[str, int], set[str]]:
        """The latest claim attempt of each task and the names in results/, from two listings."""
        attempts: dict[str, int] = {}
        if self.state.is_dir():
            for n in os.listdir(self.state):
                task, sep, k = n.partition(".claim-")
                if sep and k.isdigit():
                    attempts[task] = max(attempts.get(task, 0), int(k))
        results = set(os.listdir(self.results)) if self.results.is_dir() else set()
        return attempts, results

    def _load(self, tid: int, path: Path, scan: tuple[dict[str, int], set[str]]) -> Task:
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
        attempts, results = scan
        result = self.results / f"{task.name}-result.md"
        task.attempt = attempts.get(task.name, 0)
        if f"{task.name}-result.md" in results:
            task.result = result
            task.status, task.claimed_by = self._outcome(task.name, result)
            if task.name in self._broken:
                task.error = self._broken[task.name]
        elif task.attempt:
            # (a spec broken by hand stays invalid, but its holder is known: it may still finish)
            claim = self._claim(task.name, task.attempt)
            if claim is not None and claim.get("removed") and not claim.get("released"):
                # a rm deciding: the task is held off workers while it runs; a rm killed before
                # it decided (its lock is gone with it) counts for nothing: the task is as it was
                if self._removing(task.name, task.attempt):
                    task.expires = float(claim.get("expires", 0)) or None
                    if task.status != "invalid":
                        task.status = "claimed"
            elif claim is not None and not claim.get("released"):
                task.claimed_by = claim.get("agent")
                task.expires = float(claim.get("expires", 0))
                if task.status != "invalid":
                    task.status = "claimed" if task.expires > time.time() else "open"
                if not task.title:
                    task.title = claim.get("title", "")
        return task

    def _claim(self, name: str, attempt: int) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.state / f"{name}.claim-{attempt}").read_text())
            return data
        except (OSError, ValueError):
            return None

    def _removing(self, name: str, attempt: int) -> bool:
        """Whether the rm that made claim `attempt` of `name` still runs: it holds the claim file
        flocked from before the file appeared until it has decided, and the kernel drops the lock
        when rm ends, however it ends."""
        try:
            fd = os.open(self.state / f"{name}.claim-{attempt}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
        return False

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
                return self._load(tid, path, self._scan())
            except FileNotFoundError:
                self._listing = None  # deleted since it was listed
        self._gone(tid)
        raise UsageError(f"no task {tid} in {self.tasks}", "list them with `git fleet-task list`")

    def _gone(self, tid: int) -> None:
        """Refuse a task whose spec is gone because it was removed (its result says so): the id
        was a task's, so that is its state, not a typo."""
        name = f"task-{tid:03d}"
        result = self.results / f"{name}-result.md"
        if result.exists() and self._outcome(name, result)[0] == "removed":
            raise FleetError(f"{name} was removed{ended_at(result)} (git fleet-task rm): its spec is deleted",
                             f"see {result}; its id is not given out again")

    def why_cancelled(self, task: Task) -> str:
        """': the reason' of a cancelled task, as its result file gives it ('' if none)."""
        if task.result is None:
            return ""
        try:
            meta, body = front_matter(task.result, task.result.read_text(encoding="utf-8"))
        except (FleetError, OSError, UnicodeDecodeError):
            return ""
        when = f" at {one_line(meta['finished'])}" if meta.get("finished") else ""
        reason = one_line(body)  # on one line wherever it is shown: an error is one line
        return when + (f": {reason}" if reason and reason != CANCELLED else "")

    def dependents(self, tid: int) -> list[Task]:
        """The tasks that wait for `tid` and have not ended."""
        return [t for t in self.all() if tid in t.depends and t.result is None]
