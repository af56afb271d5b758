"""A branch's work tree following it when the fleet moves the branch (merges, syncs): a private
index, the index.lock held while the files change, and what a kill at any moment left behind."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .. import durable
from ..errors import FleetError, GitError
from .objects import hash_files
from .plumbing import (
    git,
    out,
)

if TYPE_CHECKING:
    pass
from .worktrees import Worktrees

# the git processes of a move hold the fleet's lock (lock.lent_to_git): none may start a daemon that
# would keep it, as an fsmonitor hook does (git passes its environment on to what it starts)


class IndexLocked(FleetError):
    """A work tree's index.lock is there already: someone else's, never removed here."""


def remove_dead_lock(lock_file: Path, mine: str | Collection[str], since: float) -> bool | None:
    """Remove a ref's lock file that a killed git process of ours left, and only such a one. A
    ref's lock holds the value git was about to write, so ours holds `mine` (or one of them). git
    makes the file, then fills it: an empty one is taken to be ours when made after `since` (we
    hold the fleet's lock, so no command of ours is running) and still there, unchanged, a second
    later, as no live git leaves a ref's lock for that long; one of ours made in the last
    seconds is looked at again in the same way. None: there is none; True: removed; False: kept
    (it may be a live command's)."""
    values = {mine} if isinstance(mine, str) else set(mine)
    try:
        st = lock_file.stat()
        content = lock_file.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    if content and content in values and time.time() - st.st_mtime >= 2:
        lock_file.unlink(missing_ok=True)  # ours, and long left
        return True
    if (not content or content in values) and st.st_mtime >= since - 2:  # (a live git's, so young? look again)
        time.sleep(max(0.0, st.st_mtime + 1 - time.time()))
        try:
            again = lock_file.stat()
        except FileNotFoundError:
            return None  # it was a live command's, and it is done
        if (again.st_ino, again.st_mtime_ns, again.st_size) == (st.st_ino, st.st_mtime_ns, st.st_size):
            lock_file.unlink(missing_ok=True)
            return True
    return False


def _copy_regular(source: Path, target: Path) -> None:
    """shutil.copy2 of a file an agent may have replaced (its index): only a regular file, never
    through a link (to /dev/zero, say, which would never end), its times kept."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise GitError(f"{source} is not a regular file")
        with open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


class WorkTreeMoves(Worktrees):
    """Work trees that follow a branch the fleet moves."""

    def update_refs(self, updates: list[tuple[str, str, str]], message: str, *, away_from_head: bool = False) -> None:
        """Move every (ref, new, old) at once or none: one transaction, each checked against its old
        value. away_from_head: run it from a git dir of ours whose HEAD points at no branch, so that
        git takes no HEAD.lock (to log the move in the reflog of a HEAD that points at a moved
        branch): a lock a killed git would leave empty, like a live command's. The branch's own
        reflog still records the move."""
        # (no-deref: a branch an agent made a symbolic ref moves itself, never the ref it names)
        lines = ["start"] + [f"option no-deref\nupdate {ref} {new} {old}" for ref, new, old in updates] + ["prepare", "commit"]
        env, hooks = None, []
        if away_from_head:
            env = {**os.environ, "GIT_DIR": str(self._ref_context())}
            # a relative core.hooksPath would be taken from that git dir: name the user's hooks
            hooks = ["-c", "core.hooksPath=" + out(["rev-parse", "--path-format=absolute", "--git-path", "hooks"],
                                                   self.main_worktree or self.common_dir)]
        git([*hooks, "update-ref", "-m", message, "--stdin"], self.common_dir, input=("\n".join(lines) + "\n").encode(),
            env=env)

    def _ref_context(self) -> Path:
        """<common dir>/fleet/ref-context: a git dir as a linked worktree has one (HEAD, commondir)
        but registered nowhere; its HEAD names a ref no branch can have."""
        where = self.common_dir / "fleet" / "ref-context"
        if not (where / "commondir").exists():
            where.mkdir(parents=True, exist_ok=True)
            durable.replace(where / "HEAD", "ref: refs/fleet/ref-context\n")
            durable.replace(where / "commondir", "../..\n")
        return where

    def index_path(self, worktree: Path) -> Path:
        return Path(out(["rev-parse", "--path-format=absolute", "--git-path", "index"], worktree,
                        env=self.env_for(worktree)))

    def index_lock_file(self, worktree: Path) -> Path:
        return self.index_path(worktree).with_name("index.lock")

    @contextmanager
    def private_index(self, worktree: Path) -> Iterator[tuple[Path, Path, dict[str, str]]]:
        """A copy of the work tree's index in scratch space (its time kept, for git's racy-entry
        check), for git to work on without taking index.lock, which a process killed holding it
        would leave behind: (the index, the copy, an environment naming the copy)."""
        index = self.index_path(worktree)
        with self.scratch() as space:
            copy = space / "index"
            if index.exists():
                _copy_regular(index, copy)
            yield index, copy, {**self.env_for(worktree), "GIT_INDEX_FILE": str(copy)}  # (fsmonitor off: env_for)

    def tree_changes(self, old: str, new: str) -> Iterator[tuple[str, str, str, str, str]]:
        """What differs between two commits, path by path, renames not followed:
        (path, old mode, new mode, old object, new object); an absent side's mode is 000000."""
        raw = git(["diff-tree", "-r", "-z", "--no-renames", old, new], self.common_dir).stdout.split(b"\0")
        for i in range(0, len(raw) - 1, 2):
            old_mode, new_mode, old_oid, new_oid, _status = raw[i].decode().lstrip(":").split()
            yield os.fsdecode(raw[i + 1]), old_mode, new_mode, old_oid, new_oid

    @contextmanager
    def index_lock(self, worktree: Path, marker: str) -> Iterator[None]:
        """Hold a work tree's index.lock, as git does, with a line saying it is ours (`marker`), so
        that a lock a killed command of ours left is known for ours. A lock there already, a live
        command's or a dead one's, stops it: that is never removed here."""
        lock_file = self.index_lock_file(worktree)
        # written whole beside it, then linked into place (an exclusive create that cannot leave an
        # empty lock behind, which nobody could tell from a live command's)
        with self.scratch() as space:
            made = space / "index.lock"
            made.write_text(marker + "\n", encoding="utf-8")
            try:
                try:
                    os.link(made, lock_file)
                except OSError as e:
                    if isinstance(e, FileExistsError):
                        raise
                    fd = os.open(lock_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)  # (no link here)
                    os.write(fd, (marker + "\n").encode())
                    os.close(fd)
            except FileExistsError:
                raise IndexLocked(f"{lock_file} exists: another git process is using the index of {worktree}, or "
                                  "one was killed; nothing was changed",
                                  f"if no git process is running there: rm {shlex.quote(str(lock_file))}") from None
        try:
            yield
        finally:
            try:
                if lock_file.read_text(encoding="utf-8", errors="replace").strip() == marker:
                    lock_file.unlink()
            except FileNotFoundError:
                pass  # gone already: nothing of ours to remove

    def follow(self, worktree: Path, old: str, new: str, *, killed_since: float | None = None) -> str | None:
        """Move a checked-out work tree and its index from `old` to `new` as `git merge` would:
        local changes are kept, and the move is refused where it would touch one; the caller holds
        the index's lock (index_lock). git works on a copy of the index, which replaces the index
        only when all is done. Refused, or failed half-way, the files it wrote (whole, or begun)
        are put back and git's complaint returned. killed_since: a move like this one was killed
        after that time, and the files it wrote count as written, or, begun, as not yet."""
        started = time.time()
        with self.private_index(worktree) as (index, copy, private):
            if killed_since is not None:
                self._drop_begun(worktree, old, new, killed_since)
                self.adopt_written(worktree, old, new, private)
            proc = git(["read-tree", "-m", "-u", old, new], worktree, check=False, env=private)
            if proc.returncode == 0:
                os.replace(copy, index)
                return None
            why = proc.stderr.decode("utf-8", "replace").strip() or "git read-tree failed"
            begun = self._drop_begun(worktree, old, new, started if killed_since is None else killed_since)
            written = self.adopt_written(worktree, old, new, private)
            failed = []
            if written:
                back = git(["read-tree", "-m", "-u", new, old], worktree, check=False, env=private)
                if back.returncode != 0:
                    failed.append(back.stderr.decode("utf-8", "replace").strip())
            if begun:  # their index entries are old's: write old's version back whole
                back = git(["checkout-index", "-f", "-z", "--stdin"], worktree, check=False, env=private,
                           input=b"".join(os.fsencode(p) + b"\0" for p in begun))
                if back.returncode != 0:
                    failed.append(back.stderr.decode("utf-8", "replace").strip())
            if failed:
                why += f"; and what it wrote could not be put back ({', '.join((written + begun)[:5])}): " + "; ".join(failed)
            return why

    def _drop_begun(self, worktree: Path, old: str, new: str, since: float) -> list[str]:
        """Remove the files a killed (or failed) `git read-tree -u` between `old` and `new` had begun
        to write and not finished: changed by the move, written after `since`, and holding the
        beginning of one side's version but not all of it (git writes a file front to back). Git
        writes them whole again; returns them."""
        candidates: list[tuple[str, list[str]]] = []
        for rel, old_mode, new_mode, old_oid, new_oid in self.tree_changes(old, new):
            path = worktree / rel
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_mtime < since - 1:
                continue
            sides = [oid for mode, oid in ((old_mode, old_oid), (new_mode, new_oid)) if mode in ("100644", "100755")]
            if sides:
                candidates.append((rel, sides))
        if not candidates:
            return []
        sizes = dict(zip([oid for _, sides in candidates for oid in sides],
                         out(["cat-file", "--batch-check=%(objectsize)"], self.common_dir,
                             input=b"".join(oid.encode() + b"\n" for _, sides in candidates for oid in sides)).split(),
                         strict=True))
        begun = []
        for rel, sides in candidates:
            have = (worktree / rel).read_bytes()
            for oid in sides:
                if len(have) < int(sizes[oid]):
                    blob = git(["cat-file", "blob", oid], self.common_dir).stdout
                    if blob.startswith(have):
                        (worktree / rel).unlink()
                        begun.append(rel)
                        break
        return begun

    def put_back(self, ref: str, old: str, new: str) -> bool:
        """Whether the ref's reflog ends with a move to `new` followed by a move back to `old`."""
        try:
            lines = (self.common_dir / "logs" / ref).read_bytes().splitlines()
        except OSError:
            return False
        moves = [line.split()[1].decode() for line in lines[-2:] if len(line.split()) > 1]
        return moves == [new, old]

    def adopt_written(self, worktree: Path, old: str, new: str, env: dict[str, str]) -> list[str]:
        """A `git read-tree -m -u old new` killed (or failing) midway may have written some of
        new's files but not the index, which still says old: those files would then look like
        local changes. Set the entry, in the index `env` names, of every path whose file already
        is new's version (or is gone, where new deletes it) to new's, so that running the update
        again takes them as done, or running it backwards puts them back. Returns them."""
        entries = [(os.fsencode(rel), new_mode, new_oid) for rel, _, new_mode, _, new_oid in self.tree_changes(old, new)]
        adopted: list[bytes] = []
        files: list[tuple[bytes, str]] = []  # regular files to hash, in one process
        for rel, mode, oid in entries:
            path = worktree / os.fsdecode(rel)
            if mode == "000000":
                if not os.path.lexists(path):
                    adopted.append(rel)
            elif mode == "120000":
                if path.is_symlink():
                    have = out(["hash-object", "--no-filters", "--stdin"], worktree, input=os.fsencode(os.readlink(path)),
                               env=env)
                    if have == oid:
                        adopted.append(rel)
            elif mode in ("100644", "100755") and path.is_file() and not path.is_symlink() \
                    and bool(path.stat().st_mode & 0o100) == (mode == "100755"):
                files.append((rel, oid))
        if files:
            hashed = hash_files([rel for rel, _ in files], worktree, env=env)
            adopted += [rel for (rel, oid), have in zip(files, hashed, strict=True) if have == oid]
        if adopted:  # from the files themselves, so that the index has their stat data too
            git(["update-index", "--add", "--remove", "-z", "--stdin"], worktree, input=b"\0".join(adopted) + b"\0",
                env=env)
        return [os.fsdecode(rel) for rel in adopted]

    def can_follow(self, worktree: Path, old: str, new: str) -> str | None:
        """Whether a checked-out work tree could follow its branch from `old` to `new` as
        `git merge` would (see follow): None if so, else git's complaint (local changes in the
        way). Asked on a copy of the index, as read-tree locks the index even for a dry run."""
        with self.private_index(worktree) as (_index, _copy, private):
            proc = git(["read-tree", "-m", "-u", "-n", old, new], worktree, check=False, env=private)
        return proc.stderr.decode("utf-8", "replace").strip() or "git read-tree failed" if proc.returncode else None
