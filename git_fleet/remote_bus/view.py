"""What this clone knows of the shared bus: the task refs, the ids, the results kept aside and
the log, as last fetched, read into Tasks; each claim's lease judged by when this clone first saw
that claim, on its own clock, never by another machine's time.

The log (refs/fleet/bus/log) holds the tasks that ended and were folded out of their own refs:
one directory per task, NNNNNN/, with its last step (record), spec.md, result.md and kept/. So
the remote keeps about as many refs as there are tasks in flight.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import durable, records
from ..bus.specs import Task, front_matter, slug
from ..errors import FleetError
from ..gateway import meeting
from ..records import Record

if TYPE_CHECKING:
    import pygit2

TASKS, IDS, LOG, KEPT = "bus/tasks/", "bus/ids", "bus/log", "bus/kept/"


@dataclass
class Entry:
    """One task as the shared bus holds it: its last step, the commit and tree that carry it
    (tip None: folded into the log), its spec and result, and results kept aside."""
    tid: int
    rec: Record
    tip: str | None
    tree: str
    spec: bytes
    result: bytes | None = None
    kept: dict[str, bytes] = field(default_factory=dict)  # name -> result (AGENT-K-NONCE)
    kept_refs: dict[str, str] = field(default_factory=dict)  # their refs (not folded yet) -> commit
    error: str | None = None


class View:
    def __init__(self, repo: pygit2.Repository, remote: str, root: Path, seen: Path, cache: dict[str, Entry]):
        self.repo, self.remote, self.root, self.seen = repo, remote, root, seen
        refs = meeting.refs_under(repo, meeting.tracking(remote))
        self.ids: str | None = refs.get(IDS)
        self.log: str | None = refs.get(LOG)
        self.entries: dict[int, Entry] = {}
        self.signature = tuple(sorted(refs.items()))  # what changed since another View, at a glance
        if self.log:
            self._read_log(self.log)
        for name, oid in refs.items():
            number = name.removeprefix(TASKS)
            if name.startswith(TASKS) and number.isdigit():
                hit = cache.get(oid) or self.read_tip(int(number), oid)
                cache[oid] = hit
                self.entries[int(number)] = dataclasses.replace(hit, kept=dict(hit.kept), kept_refs={})
        for held in self.entries.values():
            if held.rec.holds and held.tip is not None:
                self.first_seen(held.tip)  # (seen now: its lease counts from its first sighting here)
        for name, oid in refs.items():
            if name.startswith(KEPT):
                number, _, leaf = name.removeprefix(KEPT).partition("/")
                entry = self.entries.get(int(number)) if number.isdigit() else None
                if entry is not None:
                    try:
                        entry.kept[leaf] = self._blob(meeting.commit(repo, oid).tree, "result.md") or b""
                    except FleetError:
                        continue  # (not a commit: nothing this bus kept)
                    entry.kept_refs[meeting.SHARED + name] = oid

    # -- reading ------------------------------------------------------------------------------------

    def _blob(self, tree: pygit2.Tree, name: str) -> bytes | None:
        try:
            return meeting.blob(self.repo, str(tree[name].id))
        except KeyError:
            return None

    def read_tip(self, tid: int, oid: str) -> Entry:
        where = f"{meeting.SHARED}{TASKS}{tid} ({oid[:12]})"
        try:
            commit = meeting.commit(self.repo, oid)
            rec = records.parse(commit.message, where)
        except FleetError as e:
            return Entry(tid, Record("open", task=tid), oid, "", b"", error=f"{where}: {e.message}"
                         if not e.message.startswith(where) else e.message)
        return Entry(tid, rec, oid, str(commit.tree_id), self._blob(commit.tree, "spec.md") or b"",
                     self._blob(commit.tree, "result.md"))

    def _read_log(self, oid: str) -> None:
        tree = meeting.commit(self.repo, oid).tree
        for item in tree:
            if not (item.name or "").isdigit() or item.type_str != "tree":
                continue
            sub = meeting.tree(self.repo, str(item.id))
            number = int(item.name or 0)
            raw = self._blob(sub, "record") or b""
            try:
                rec = records.parse(raw.decode("utf-8", "replace"), f"{meeting.SHARED}{LOG}:{item.name}/record")
                error: str | None = None
            except FleetError as e:
                rec, error = Record("open", task=number), e.message
            entry = Entry(number, rec, None, str(sub.id), self._blob(sub, "spec.md") or b"",
                          self._blob(sub, "result.md"), error=error)
            if "kept" in sub:
                entry.kept = {(k.name or "").removesuffix(".md"): meeting.blob(self.repo, str(k.id))
                              for k in meeting.tree(self.repo, str(sub["kept"].id))}
            self.entries[entry.tid] = entry

    def next_id(self) -> int:
        if self.ids is not None:
            try:
                return max(records.parse(meeting.commit(self.repo, self.ids).message, meeting.SHARED + IDS).next,
                           max(self.entries, default=0) + 1)
            except FleetError:
                pass
        return max(self.entries, default=0) + 1

    # -- leases, on this clone's clock ---------------------------------------------------------------

    def first_seen(self, oid: str) -> float:
        return first_seen(self.seen, oid)

    # -- Tasks ----------------------------------------------------------------------------------------

    def task(self, entry: Entry) -> Task:
        """The Task of `entry`; its spec and result written here (tasks/, results/) for reading,
        where this process may write: copies, which count for nothing."""
        rec = entry.rec
        text = entry.spec.decode("utf-8", "replace")
        task = Task(entry.tid, self.root / "tasks" / f"task-{entry.tid:03d}.md")
        try:
            meta, body = front_matter(task.path, text)
            task.title = str(meta.get("title", ""))
            task.path = self.root / "tasks" / f"task-{entry.tid:03d}-{slug(task.title)}.md"
            task.agent = meta.get("agent") or None
            task.depends = [int(d) for d in meta.get("depends", [])]
            task.priority = int(meta.get("priority", 0) or 0)
            task.created = str(meta.get("created", ""))
            task.body = body
        except (FleetError, ValueError) as e:
            task.error, task.status = (e.message if isinstance(e, FleetError) else str(e)), "invalid"
        if entry.error:
            task.error, task.status = entry.error, "invalid"
            return task
        _copy(task.path, entry.spec)
        task.attempt = rec.attempt
        if rec.ended:
            task.status = rec.op
            task.claimed_by = rec.agent
            task.result = self.root / "results" / f"task-{entry.tid:03d}-result.md"
            _copy(task.result, entry.result or b"")
        elif rec.holds and entry.tip is not None:
            task.claimed_by = rec.agent
            task.expires = self.first_seen(entry.tip) + rec.lease
            if task.status != "invalid":
                task.status = "claimed" if task.expires > time.time() else "open"
        return task

    def kept_files(self, entry: Entry) -> list[Path]:
        found = []
        for name, data in sorted(entry.kept.items()):
            agent_k = name.rsplit("-", 1)[0]  # AGENT-K, without the nonce
            path = self.root / "results" / f"task-{entry.tid:03d}-unrecorded-{agent_k}.md"
            if path.exists() and path.read_bytes() != data:
                path = path.with_name(f"task-{entry.tid:03d}-unrecorded-{name}.md")
            _copy(path, data)
            found.append(path)
        return found


def first_seen(seen: Path, oid: str) -> float:
    """When this clone first saw the record `oid` (now, if this is the first time): a file of its
    own in `seen`, made once, its time this clone's clock."""
    mark = seen / oid
    try:
        fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        try:
            return os.stat(mark).st_mtime
        except OSError:
            return time.time()
    except FileNotFoundError:
        try:
            seen.mkdir(parents=True, exist_ok=True)
        except OSError:
            return time.time()
        return first_seen(seen, oid)
    except OSError:
        return time.time()  # (a place this process cannot write: it counts from now)
    os.close(fd)
    return time.time()


def _copy(path: Path, data: bytes) -> None:
    try:
        st = path.stat()
    except OSError:
        st = None
    try:
        if st is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            durable.create(path, data.decode("utf-8", "replace"))
        elif st.st_size != len(data) or path.read_bytes() != data:
            durable.replace(path, data.decode("utf-8", "replace"))
    except OSError:
        pass  # (only a copy to read: the task and its state come from the refs)
