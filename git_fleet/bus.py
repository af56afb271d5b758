"""The coordination bus: task specs, claims, leases and results as files.

The rules that keep it correct under many concurrent workers (the Maildir rules):
- one writer per file: the orchestrator writes a task spec once; workers never edit it;
- every file is written to a temporary name, fsynced, then linked or renamed into place, so a
  reader never sees half a file;
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
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FleetError, UsageError
from .files import write_atomic, write_new
from .pause import pause

STATE = ".state"
DEFAULT_LEASE = 30 * 60
_ID = re.compile(r"^(?:task-)?0*(\d+)$")
_SPEC = re.compile(r"^task-(\d+)-.*\.md$")
PLAN_START = "<!-- git-fleet: plan starts here; everything between these markers is regenerated -->"
PLAN_END = "<!-- git-fleet: plan ends here -->"
CANCELLED = "Cancelled."  # the result of a task cancelled without a reason
REMOVED = "Removed: added by mistake (git fleet-task rm); its spec is deleted."
ENDED = ("failed", "cancelled", "removed")  # outcomes a task that waits for it never gets past
RM_WAIT = 10.0  # seconds an add waits for a rm of its dependency to decide


def parse_id(text: str) -> int:
    m = _ID.match(text.strip())
    if not m:
        raise UsageError(f"'{text}' is not a task id", "ids look like 7, 007 or task-007")
    return int(m.group(1))


def one_line(text: str) -> str:
    """`text` with its lines joined by spaces: how a reason or a title is shown, and all a
    front matter value may be (a line break in one would start a line of its own there)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def slug(title: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return s[:40].rstrip("-") or "task"


def settled(mtime_ns: int, read_ns: int) -> bool:
    """git's racy rule (Documentation/technical/racy-git.txt): a file changed within the timestamp
    tick it was read in keeps its time and, changed in place, its size, so what was read from it
    is trusted only when its time was older than the reading by more than a tick. Where times fall
    on whole seconds the file system counts in seconds (two on FAT); elsewhere the tick is the
    kernel's clock tick, a few milliseconds."""
    tick = 2_000_000_000 if mtime_ns % 1_000_000_000 == 0 else 100_000_000
    return mtime_ns < read_ns - tick


# -- front matter -----------------------------------------------------------------------------------

def front_matter(path: Path, text: str) -> tuple[dict[str, Any], str]:
    """The `---` block at the top of a task file, as a dict, and the body; errors name file and line."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise FleetError(f"{path}:1: no front matter (the file must start with a '---' line)")
    data: dict[str, Any] = {}
    for no, line in enumerate(lines[1:], 2):
        if line.strip() == "---":
            return data, "\n".join(lines[no:]).lstrip("\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep or not re.fullmatch(r"[a-z_]+", key.strip()):
            raise FleetError(f"{path}:{no}: expected 'key: value', found {line.strip()!r}")
        value = value.strip()
        if value.startswith("["):
            if not value.endswith("]"):
                raise FleetError(f"{path}:{no}: unclosed list in {key.strip()}")
            data[key.strip()] = [v.strip().strip("\"'") for v in value[1:-1].split(",") if v.strip()]
        else:
            data[key.strip()] = value.strip("\"'")
    raise FleetError(f"{path}:{len(lines)}: the front matter is not closed with a '---' line")


def _line_of(path: Path, key: str) -> int:
    """The line of `key:` in the front matter of `path` (1 if it cannot be found)."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError):
        return 1
    for no, line in enumerate(lines[1:], 2):
        if line.strip() == "---":
            break
        if line.partition(":")[0].strip() == key:
            return no
    return 1


def _render(meta: dict[str, Any], body: str) -> str:
    """A task file: the front matter, one line per key whatever the values hold (so no value can
    end it or add keys: its lines are joined, a value read as a list is quoted), then the body."""
    out = ["---"]
    for k, v in meta.items():
        if isinstance(v, list):
            out.append(f"{k}: [{', '.join(one_line(x) for x in v)}]")
        elif v is not None:
            value = one_line(v)
            out.append(f'{k}: "{value}"' if value.startswith("[") else f"{k}: {value}")
    return "\n".join(out) + "\n---\n\n" + body.rstrip("\n") + "\n"


def _raw_depends(path: Path) -> list[int] | None:
    """The `depends:` of a spec that does not read as a whole (broken by hand), from its lines
    alone; None when they cannot be told (not text, no front matter, a depends line that does not
    read): then the task may wait for any other."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    if not lines or lines[0].strip() != "---":
        return None
    found: list[int] = []
    for line in lines[1:]:  # (an unclosed front matter: every line, for a depends anywhere)
        if line.strip() == "---":
            break
        key, sep, value = line.partition(":")
        if sep and key.strip() == "depends":
            value = value.strip()
            if not (value.startswith("[") and value.endswith("]")):
                return None
            try:
                found += [parse_id(v.strip().strip("\"'")) for v in value[1:-1].split(",") if v.strip()]
            except FleetError:
                return None
    return found


@dataclass
class Task:
    id: int
    path: Path
    title: str = ""
    agent: str | None = None
    depends: list[int] = field(default_factory=list)
    priority: int = 0
    created: str = ""
    body: str = ""
    error: str | None = None  # a spec edited by hand into something unreadable
    depends_known: bool = True  # False: a spec so broken that what it waits for cannot be told
    status: str = "open"  # open, claimed, done, failed, cancelled, invalid; removed while rm finishes
    attempt: int = 0
    claimed_by: str | None = None
    expires: float | None = None
    result: Path | None = None
    name: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.name = f"task-{self.id:03d}"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "title": self.title, "agent": self.agent,
                "depends": self.depends, "priority": self.priority, "created": self.created,
                "status": self.status, "attempt": self.attempt, "claimed_by": self.claimed_by,
                "lease_expires": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires))
                                  if self.expires else None),
                "path": str(self.path), "result": str(self.result) if self.result else None,
                "error": self.error}


class Bus:
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
        self._listing: tuple[int, int, dict[int, Path]] | None = None

    def ensure(self) -> None:
        for d in (self.tasks, self.results, self.state):
            d.mkdir(parents=True, exist_ok=True)
        # live claim state never becomes tracked (git add -A), so it cannot change with a branch
        ignore = self.state / ".gitignore"
        if not ignore.exists():
            write_new(ignore, "# git-fleet's live claim state: never tracked\n*\n")

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
            m = _SPEC.match(entry.name)
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
            except (FleetError, OSError, UnicodeDecodeError):
                return "done", None
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
            task.depends = [self._field(path, "depends", parse_id, d) for d in meta.get("depends", [])]
            task.priority = self._field(path, "priority", int, meta.get("priority", 0) or 0)
            task.created = meta.get("created", "")
            task.body = body
        except FileNotFoundError:
            raise
        except (FleetError, ValueError, UnicodeDecodeError, OSError) as e:
            task.error = e.message if isinstance(e, FleetError) else f"{path}: {e}"
            task.status = "invalid"
            raw = _raw_depends(path)  # what it waits for still counts (rm must not delete that)
            if raw is None and not path.exists():
                raise FileNotFoundError(path) from None
            task.depends, task.depends_known = raw or [], raw is not None
        attempts, results = scan
        result = self.results / f"{task.name}-result.md"
        task.attempt = attempts.get(task.name, 0)
        if f"{task.name}-result.md" in results:
            task.result = result
            task.status, task.claimed_by = self._outcome(task.name, result)
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

    @staticmethod
    def _field(path: Path, key: str, convert: Any, value: Any) -> Any:
        """A front matter value converted, or an error naming the file and the line of `key`."""
        try:
            return convert(value)
        except (ValueError, FleetError) as e:
            why = e.message if isinstance(e, FleetError) else f"{value!r} is not a number"
            raise FleetError(f"{path}:{_line_of(path, key)}: {key}: {why}") from None

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
            raise FleetError(f"{name} was removed{self._when(result)} (git fleet-task rm): its spec is deleted",
                             f"see {result}; its id is not given out again")

    @staticmethod
    def _when(result: Path) -> str:
        try:
            meta, _ = front_matter(result, result.read_text(encoding="utf-8"))
        except (FleetError, OSError, UnicodeDecodeError):
            return ""
        return f" at {meta['finished']}" if meta.get("finished") else ""

    # -- writing ----------------------------------------------------------------------------------

    def add(self, title: str, *, agent: str | None = None, body: str = "", depends: list[int] | None = None,
            priority: int = 0) -> Task:
        if not one_line(title):
            raise UsageError("a task needs a title")
        self.ensure()
        for d in depends or []:
            self._dependency(d)
        # last-id is only a hint (it may lag behind); the exclusive create of id-N decides
        hint = self.state / "last-id"
        try:
            tid = int(hint.read_text()) + 1
        except (OSError, ValueError):
            tid = max(self._spec_paths(), default=0) + 1
        while not write_new(self.state / f"id-{tid}", f"{os.getpid()}\n"):
            tid += 1  # another process took it: the next one
        try:
            write_atomic(hint, str(tid))
        except OSError:
            pass
        meta = {"id": tid, "title": one_line(title), "agent": agent, "depends": [str(d) for d in depends or []],
                "priority": priority, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        path = self.tasks / f"task-{tid:03d}-{slug(title)}.md"
        if not write_new(path, _render(meta, body or title)):
            raise FleetError(f"{path} exists already")
        self._listing = None
        pause("add-written")
        # again, now that the spec is there: a rm of a dependency that read the specs before this
        # one was written has its claim in place by now (rm claims, then reads the specs again)
        for d in depends or []:
            try:
                self._dependency(d, written=True)
            except FleetError as e:
                path.unlink(missing_ok=True)
                self._listing = None
                raise FleetError(f"{e.message}; task-{tid:03d} was not added (its spec is deleted again)",
                                 e.hint) from None
        return self.get(tid)

    def _dependency(self, d: int, *, written: bool = False) -> None:
        """Refuse a dependency on task `d` if no task could ever get past it: it does not exist
        (a wrong id: misuse, exit 2; or deleted meanwhile, once this task's spec is written: exit
        1), or it ended in a way no dependent waits out (failed, cancelled, removed). A rm of it
        that is deciding just now is waited for, up to RM_WAIT seconds."""
        name = f"task-{d:03d}"
        attempt = self._scan()[0].get(name, 0)
        claim = self._claim(name, attempt) if attempt else None
        if claim is not None and claim.get("removed") and not claim.get("released"):
            deadline = time.monotonic() + RM_WAIT
            while self._removing(name, attempt):
                if time.monotonic() > deadline:
                    raise FleetError(f"{name} (a dependency) is being removed by git fleet-task rm (pid "
                                     f"{claim.get('pid')}) just now", "try again in a moment")
                time.sleep(0.02)
        result = self.results / f"{name}-result.md"
        status = self._outcome(name, result)[0] if result.exists() else None
        if status in ENDED:
            raise FleetError(f"{name} (a dependency) {'was' if status == 'removed' else 'is'} {status}"
                             f"{self._when(result)}: a task that waits for it could never be claimed",
                             f"add it without --depends {d} (see {result})")
        self._listing = None
        if d not in self._spec_paths():
            if written:
                raise FleetError(f"{name} (a dependency) was deleted meanwhile")
            raise UsageError(f"task {d} (a dependency) does not exist", "list them with git fleet-task list")

    def claim(self, agent: str, lease: int | None = None) -> Task | None:
        """Claim the next task for `agent`: open, its dependencies done, assigned to it or to
        nobody, by priority then id. None when nothing can be claimed now."""
        self.ensure()
        scan = self._scan()
        attempts, results = scan
        specs = self._spec_paths()
        unfinished = {tid: p for tid, p in specs.items() if f"task-{tid:03d}-result.md" not in results}
        done = {tid for tid in specs if tid not in unfinished and self._outcome(
            f"task-{tid:03d}", self.results / f"task-{tid:03d}-result.md")[0] == "done"}
        # candidates from the (cached) specs alone; claim files are read only in turn, until one is open
        candidates = []
        for tid, path in unfinished.items():
            try:
                meta, _ = self._spec(path)
                if (meta.get("agent") or None) not in (None, agent):
                    continue
                if not {parse_id(d) for d in meta.get("depends", [])} <= done:
                    continue
                candidates.append((-int(meta.get("priority", 0) or 0), tid, path))
            except (FleetError, ValueError, UnicodeDecodeError, OSError):
                continue  # an unreadable spec is listed as invalid, never claimed
        for _, tid, path in sorted(candidates):
            try:
                task = self._load(tid, path, scan)
            except FileNotFoundError:
                continue  # removed meanwhile
            if task.status != "open":
                continue
            if self._take(task, agent, lease):
                if (self.results / f"{task.name}-result.md").exists():
                    continue  # it ended (or was cancelled) between our look and our claim
                return self.get(task.id)
        return None

    def _take(self, task: Task, agent: str | None, lease: int | None, **extra: Any) -> bool:
        """Claim attempt N+1 of an open task by exclusive create; False if another worker won it."""
        attempt = task.attempt + 1
        record = {"agent": agent, "attempt": attempt, "pid": os.getpid(), "title": task.title,
                  "claimed": time.time(), "expires": time.time() + (lease or self.lease), **extra}
        return write_new(self.state / f"{task.name}.claim-{attempt}", json.dumps(record))

    def adopt(self, tid: int, file: str, spec: str, agent: str, lease: int | None = None) -> Task:
        """Hold here a task that `agent` held in another clone (git fleet-teleport pull): the
        spec is written under its own name and id if this bus lacks it, then claimed for the
        agent, or renewed if the agent holds it already."""
        self.ensure()
        have = self._spec_paths().get(tid)
        if have is None:
            m = _SPEC.match(file)
            if m is None or int(m.group(1)) != tid or "/" in file:
                raise FleetError(f"'{file}' is not the spec file of task {tid}")
            write_new(self.state / f"id-{tid}", f"{os.getpid()}\n")  # keep `add` from reusing the id
            if not write_new(self.tasks / file, spec):
                raise FleetError(f"{self.tasks / file} appeared meanwhile")
            self._listing = None
        elif have.name != file or have.read_text(encoding="utf-8") != spec:
            raise FleetError(f"task {tid} here is another task ({have.name})",
                             "add it here under a new id with git fleet-task add")
        task = self.get(tid)
        if task.status in ("done", *ENDED):
            raise FleetError(f"it is {task.status} here")
        live = task.expires is not None and task.expires > time.time()
        if task.status == "claimed" or task.status == "invalid" and live:  # (held, its spec broken since)
            if task.claimed_by != agent:
                raise FleetError(f"'{task.claimed_by or 'git fleet-task rm'}' holds it here")
            return self.renew(tid, agent, lease)
        if not self._take(task, agent, lease):
            raise FleetError("another worker claimed it just now")
        return self.get(tid)

    def _holding(self, tid: int, agent: str) -> Task:
        """The task, if `agent` holds its current attempt, live. A spec broken by hand after the
        claim does not take it away: the claim is the truth, and the holder may renew or finish."""
        task = self.get(tid)
        if task.status == "cancelled":
            raise FleetError(f"{task.name} was cancelled{self.why_cancelled(task)}; '{agent}' does not hold it any more",
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

    def renew(self, tid: int, agent: str, lease: int | None = None) -> Task:
        task = self._holding(tid, agent)
        record = self._claim(task.name, task.attempt) or {}
        record["expires"] = time.time() + (lease or self.lease)
        write_atomic(self.state / f"{task.name}.claim-{task.attempt}", json.dumps(record))
        return self.get(tid)

    def release(self, tid: int, agent: str) -> Task:
        task = self._holding(tid, agent)
        record = self._claim(task.name, task.attempt) or {}
        record["released"] = True
        write_atomic(self.state / f"{task.name}.claim-{task.attempt}", json.dumps(record))
        return self.get(tid)

    def finish(self, tid: int, agent: str, body: str, *, failed: bool = False) -> Task:
        """Record the outcome of a task `agent` holds. Refused (the task was cancelled, taken over,
        ended meanwhile), the result is not dropped: it is kept beside the outcome, if `agent`
        ever held the task, and the error says where."""
        status = "failed" if failed else "done"
        try:
            task = self._holding(tid, agent)
            meta = {"task": task.name, "title": task.title, "status": status, "agent": agent,
                    "attempt": task.attempt, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            self.ensure()
            if not write_new(self.results / f"{task.name}-result.md", _render(meta, body)):
                ended = self.get(tid)
                if ended.status == "cancelled":
                    self._holding(tid, agent)  # (says so, with the reason)
                raise FleetError(f"{task.name} is {ended.status}: it ended while this result was being written; "
                                 "this one was not recorded", f"see {ended.result}")
        except FleetError as e:
            kept = self._keep(tid, agent, status, body, e.message.split("\n")[0])
            if kept is not None:
                e.hint = "\n".join([*(e.hint.split("\n") if e.hint else []),
                                    f"nothing is lost: this result is kept at {kept}"])
            raise
        return self.get(tid)

    def _keep(self, tid: int, agent: str, status: str, body: str, why: str) -> Path | None:
        """Keep a result that was not recorded as the task's outcome at
        results/task-N-unrecorded-AGENT-K.md, if `agent` held some attempt of the task; None if it
        never did (a typo in the id, say) or the file cannot be written."""
        name = f"task-{tid:03d}"
        held = [k for k in range(1, self._scan()[0].get(name, 0) + 1)
                if (self._claim(name, k) or {}).get("agent") == agent]
        if not held:
            return None
        meta = {"task": name, "title": (self._claim(name, held[-1]) or {}).get("title"), "status": status,
                "agent": agent, "attempt": held[-1],
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "unrecorded": why.replace("\n", " ")}
        who = re.sub(r"[^A-Za-z0-9._-]+", "-", agent).strip("-.") or "agent"
        try:
            self.ensure()
            for k in range(1, 1000):
                path = self.results / f"{name}-unrecorded-{who}-{k}.md"
                if write_new(path, _render(meta, body)):
                    return path
        except OSError:
            pass
        return None

    def unrecorded(self, task: Task) -> list[Path]:
        """The results kept for `task` that were not recorded as its outcome."""
        return sorted(self.results.glob(f"{task.name}-unrecorded-*.md"))

    # -- the orchestrator's -----------------------------------------------------------------------

    def dependents(self, tid: int) -> list[Task]:
        """The tasks that wait for `tid` and have not ended."""
        return [t for t in self.all() if tid in t.depends and t.result is None]

    def cancel(self, tid: int, reason: str | None = None) -> Task:
        """End a task that has not ended (open, claimed, or with a spec broken by hand): its
        outcome is a result file with status cancelled, linked into place as any result is, so a
        holder's `done`, a rm and the cancel cannot both win. The holder is refused from then on.
        The reason is the result's body, as given (the front matter is closed before it, so it
        can add nothing there); it is shown on one line."""
        task = self.get(tid)
        if task.result is not None:
            state = "was removed" if task.status == "removed" else f"is {task.status}"
            raise FleetError(f"{task.name} {state} already; there is nothing to cancel", f"see {task.result}")
        holder = task.claimed_by if task.expires is not None and task.expires > time.time() else None
        meta = {"task": task.name, "title": task.title, "status": "cancelled", "holder": holder,
                "attempt": task.attempt, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.ensure()
        result = self.results / f"{task.name}-result.md"
        if not write_new(result, _render(meta, (reason or "").strip() or CANCELLED)):
            status = self._outcome(task.name, result)[0]  # (its spec may be gone: a rm won)
            raise FleetError(f"{task.name} {'was' if status == 'removed' else 'is'} {status}: it ended just now; "
                             "nothing was cancelled", f"see {result}")
        return self.get(tid)

    def remove(self, tid: int) -> Task:
        """Delete the spec of a task nobody ever claimed and nothing waits for (one added by
        mistake). A task with any history is cancelled instead, so its record stays.

        It ends as any task does, once: rm claims it (a claim of its own, `removed`, flocked while
        rm runs) to keep workers off, reads the specs again for tasks that wait for it (an add
        may have written one meanwhile), links its result, status removed, then deletes the spec.
        A cancel racing it is settled by that link: the first one linked wins, the other is
        refused. Killed before the link, its claim counts for nothing (see _load); after it, the
        spec is deleted by the next scan or rm."""
        task = self.get(tid)
        hint = f"cancel it instead (git fleet-task cancel {tid} --reason ...): it ends, and its record stays"
        if task.status == "removed":  # a rm killed after it decided: finish its work
            self._delete_spec(task)
            return task
        if task.result is not None:
            raise FleetError(f"{task.name} is {task.status}; its spec stays with its result ({task.result})")
        if task.attempt and (self._claim(task.name, task.attempt) or {}).get("removed") \
                and self._removing(task.name, task.attempt):
            raise FleetError(f"{task.name} is being removed by another git fleet-task rm just now",
                             "see git fleet-task list in a moment")
        claims = [k for k in range(1, task.attempt + 1) if not (self._claim(task.name, k) or {}).get("removed")]
        if claims:
            live = task.claimed_by and task.expires is not None and task.expires > time.time()
            who = f"'{task.claimed_by}' holds it" if live else "it was claimed before"
            raise FleetError(f"{task.name} has been claimed (attempt {claims[-1]}): {who}", hint)
        self._refuse_dependents(task, hint)
        self.ensure()
        fd = self._mark(task)
        if fd is None:
            if (self._claim(task.name, task.attempt + 1) or {}).get("removed"):
                raise FleetError(f"{task.name} is being removed by another git fleet-task rm just now",
                                 "see git fleet-task list in a moment")
            raise FleetError(f"{task.name} was claimed just now; it was not removed", hint)
        marker = self.state / f"{task.name}.claim-{task.attempt + 1}"
        result = self.results / f"{task.name}-result.md"
        try:
            pause("rm-marked")
            self._listing = None
            self._refuse_dependents(task, hint)  # again: an add --depends may have written its spec meanwhile
            meta = {"task": task.name, "title": task.title, "status": "removed",
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if not write_new(result, _render(meta, REMOVED)):
                status = self._outcome(task.name, result)[0]
                raise FleetError(f"{task.name} {'was' if status == 'removed' else 'is'} {status}: it ended just now; "
                                 "it was not removed", f"see {result}")
        finally:
            marker.unlink(missing_ok=True)  # (ours: no one else writes that name; decided, it keeps nothing off)
            os.close(fd)
        pause("rm-ended")
        self._delete_spec(task)
        return task

    def _delete_spec(self, task: Task) -> None:
        try:
            task.path.unlink(missing_ok=True)
        except OSError as e:
            raise FleetError(f"cannot delete {task.path}: {e.strerror}; {task.name} is removed all the same "
                             f"(results/{task.name}-result.md)", f"delete it by hand, or git fleet-task rm {task.id} "
                             "again when it can be written") from None
        self._listing = None

    def _refuse_dependents(self, task: Task, hint: str) -> None:
        """Refuse to remove `task` if an unfinished task waits for it, or may: a spec so broken
        that its depends cannot be read."""
        waiting = self.dependents(task.id)
        if waiting:
            raise FleetError(f"{', '.join(t.name for t in waiting)} depend{'s' if len(waiting) == 1 else ''} on "
                             f"{task.name}", hint + "; or remove the dependency from their specs (depends:)")
        unknown = [t for t in self.all() if not t.depends_known and t.result is None and t.id != task.id]
        if unknown:
            raise FleetError("\n".join([f"cannot tell whether {t.name} depends on {task.name}: its spec cannot be read"
                                         for t in unknown] + [t.error or "" for t in unknown]),
                             f"fix {'them' if len(unknown) > 1 else 'it'} (git fleet-doctor lists where), then remove "
                             f"{task.name}; or " + hint)

    def _mark(self, task: Task) -> int | None:
        """rm's claim of `task`, attempt N+1, `removed`: an exclusive create, as a worker's claim,
        of a file flocked before it appears. Returns the open file, which holds the lock until it
        is closed (or rm ends); None if a worker or another rm claimed that attempt first."""
        attempt = task.attempt + 1
        record = {"agent": None, "attempt": attempt, "pid": os.getpid(), "title": task.title, "claimed": time.time(),
                  "expires": time.time() + self.lease, "removed": True}
        fd, tmp = tempfile.mkstemp(prefix=f".{task.name}.claim-{attempt}.", suffix=".tmp", dir=self.state)
        try:
            os.write(fd, json.dumps(record).encode("utf-8"))
            os.fsync(fd)
            os.fchmod(fd, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.link(tmp, self.state / f"{task.name}.claim-{attempt}")
        except FileExistsError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.unlink(tmp)
        return fd

    # -- the plan ---------------------------------------------------------------------------------

    def after(self, task: Task, tasks: list[Task]) -> str:
        """What `task` waits for, each marked if no task ever gets past it: failed or cancelled,
        removed (its spec deleted by rm), or missing (no spec, deleted by hand)."""
        state = {t.id: t.status for t in tasks}
        marks = []
        for d in task.depends:
            mark = state.get(d)
            if mark is None:
                result = self.results / f"task-{d:03d}-result.md"
                removed = result.exists() and self._outcome(f"task-{d:03d}", result)[0] == "removed"
                mark = "removed" if removed else "missing"
            marks.append(f"task-{d:03d}" + (f" ({mark})" if mark in (*ENDED, "missing") else ""))
        return ", ".join(marks)

    def write_plan(self) -> Path:
        tasks = self.all()
        by_status: dict[str, list[Task]] = {}
        done = {t.id for t in tasks if t.status == "done"}
        for t in tasks:
            status = "blocked" if t.status == "open" and not set(t.depends) <= done else t.status
            by_status.setdefault(status, []).append(t)
        lines = [PLAN_START, "", f"## Tasks ({len(tasks)})", ""]
        for status in ("claimed", "open", "blocked", "failed", "cancelled", "done", "invalid"):
            group = by_status.get(status, [])
            if not group:
                continue
            lines += [f"### {status.capitalize()} ({len(group)})", ""]
            for t in group:
                rel = os.path.relpath(t.path, self.root)
                line = f"- [{t.name}]({rel}) {t.title}"
                if t.agent:
                    line += f" (for {t.agent})"
                if t.claimed_by and status == "claimed":
                    line += f", claimed by {t.claimed_by}"
                if t.depends:
                    line += ", after " + self.after(t, tasks)
                if t.result:
                    line += f" → [result]({os.path.relpath(t.result, self.root)})"
                if t.error:
                    line += f": {t.error}"
                lines.append(line)
            lines.append("")
        agents = sorted({t.agent or "(anyone)" for t in tasks})
        if agents:
            lines += ["## By agent", ""]
            for a in agents:
                mine = [t for t in tasks if (t.agent or "(anyone)") == a]
                counts = ", ".join(f"{sum(1 for t in mine if t.status == s)} {s}"
                                   for s in ("open", "claimed", "done", "failed", "cancelled")
                                   if any(t.status == s for t in mine))
                lines.append(f"- {a}: {counts}")
            lines.append("")
        lines.append(PLAN_END)
        generated = "\n".join(lines)
        old = self.plan.read_text(encoding="utf-8") if self.plan.exists() else "# Master plan\n\n"
        if PLAN_START in old and PLAN_END in old:
            before, rest = old.split(PLAN_START, 1)
            after = rest.split(PLAN_END, 1)[1]
            text = before + generated + after
        else:
            text = old.rstrip("\n") + "\n\n" + generated + "\n"
        write_atomic(self.plan, text)
        return self.plan

    def watcher(self) -> Any:
        """A notify.Watcher of the bus: the hint that something changed; the caller's rescan is the
        truth (inotify misses events on network and some container mounts)."""
        from . import notify

        self.ensure()
        return notify.Watcher([self.tasks, self.state, self.results])
