"""Worktrees: what git lists, adding and removing them, scratch worktrees, their status, a
checkout git was killed in the middle of, and a rebase made in a worktree of its own."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from .. import durable
from ..errors import FleetError
from . import scratch
from .environments import Environments
from .plumbing import (
    MAIN_RECORD,
    git,
    linked_worktrees,
    out,
    parse_worktree_list,
    read_file,
    rebasing,
)


@dataclass(frozen=True)
class Worktree:
    path: Path
    head: str | None
    branch: str | None  # short name, None when detached
    bare: bool = False
    prunable: bool = False  # registered, but its directory is gone
    busy: str | None = None  # the branch a detached worktree is rebasing or bisecting
    locked: str | None = None  # why it is locked ("" for no reason given); git's add locks it until done

    def has(self, branch: str) -> bool:
        """Whether git counts `branch` as checked out here: on HEAD, or being rebased or bisected
        (git refuses to delete or move such a branch: `git branch -d` says "checked out at")."""
        return not self.bare and not self.prunable and branch in (self.branch, self.busy)


# What points git at a repository, a work tree or an index: the user's GIT_DIR for a main worktree
# kept apart from its git dir (core.worktree), a hook's GIT_INDEX_FILE. Inherited by a git run in
# another worktree, they would take it to the main worktree instead.


def _busy_branch(worktree: str, records: dict[str, str] | None = None) -> str | None:
    """The branch a detached worktree is in the middle of rebasing or bisecting, from its git dir
    (as git's own find_shared_symref reads it): the repository's record of it (`records`, by
    worktree) where it has one, never the .git file in it, which an agent can point elsewhere."""
    dotgit = os.path.join(worktree, ".git")
    recorded = (records or {}).get(os.path.realpath(worktree))
    if recorded:
        git_dir = recorded
    elif os.path.isfile(dotgit):
        link = read_file(dotgit) or ""
        git_dir = os.path.join(worktree, link[8:]) if link.startswith("gitdir: ") else dotgit
    else:  # a .git directory, or none: git lists the git dir itself for a main worktree kept apart
        git_dir = dotgit if os.path.isdir(dotgit) else worktree
    ref = rebasing(git_dir)
    return ref[11:] if ref else read_file(os.path.join(git_dir, "BISECT_START")) or None  # a short name


def worktrees_of(raw: bytes, records: dict[str, str] | None = None) -> list[Worktree]:
    """`git worktree list --porcelain -z` read; `records`: the repository's git dir of each linked
    worktree (plumbing.linked_worktrees)."""
    trees = []
    for fields in parse_worktree_list(raw):
        branch = fields.get("branch")
        detached = "detached" in fields and "prunable" not in fields
        trees.append(Worktree(
            path=Path(fields["worktree"]),
            head=fields.get("HEAD"),
            branch=branch.removeprefix("refs/heads/") if branch else None,
            bare="bare" in fields,
            prunable="prunable" in fields,
            busy=_busy_branch(fields["worktree"], records) if detached else None,
            locked=fields.get("locked"),
        ))
    return trees


class Worktrees(Environments):
    """The repository's worktrees."""

    def worktrees(self) -> list[Worktree]:
        trees = worktrees_of(git(["worktree", "list", "--porcelain", "-z"], self.common_dir).stdout,
                             linked_worktrees(str(self.common_dir)))
        if trees and not trees[0].bare and trees[0].path == self.common_dir and self.main_worktree is not None:
            # a git dir kept apart (--separate-git-dir, core.worktree): git names the git dir itself
            # as the main worktree; the work tree is where its files are
            trees[0] = replace(trees[0], path=self.main_worktree)
        return trees

    def is_main_worktree(self) -> bool:
        return self.toplevel is not None and self.toplevel == self.main_worktree

    def record_main_worktree(self) -> None:
        """Remember the main worktree where git itself cannot tell it (see main_worktree_of)."""
        if self.toplevel is None or self.git_dir != self.common_dir or self.common_dir.name == ".git":
            return
        record = self.common_dir / MAIN_RECORD
        record.parent.mkdir(exist_ok=True)
        if read_file(str(record)) != str(self.toplevel):
            durable.replace(record, str(self.toplevel) + "\n")

    def checked_out(self, branch: str) -> Path | None:
        """The work tree that has `branch` checked out, as git records it (a branch is checked out
        in one worktree at most, rebased or bisected there included); None when none has."""
        tree = self.worktree_with(branch)
        return tree.path if tree is not None else None

    def worktree_with(self, branch: str, *, prunable: bool = False) -> Worktree | None:
        """The worktree that has `branch` checked out (see checked_out), as `git worktree list` has it;
        with `prunable`, one whose directory is gone counts too (git still refuses to move the
        branch under it)."""
        found = [w for w in self.worktrees() if w.has(branch) or (prunable and w.prunable and not w.bare
                                                                    and branch in (w.branch, w.busy))]
        live = [w for w in found if not w.prunable]
        if len(live) > 1:  # (an agent's HEAD made to name another's branch: which one moves would be a guess)
            raise FleetError(f"branch {branch} is checked out in {len(live)} worktrees: "
                             + ", ".join(str(w.path) for w in live),
                             "one of them is not the branch's agent's: git worktree list, then check out its own "
                             "branch there")
        return found[0] if found else None

    def worktree_add(self, path: Path, branch: str) -> None:
        git(["worktree", "add", "--quiet", str(path), branch], self.common_dir)

    def worktree_remove(self, path: Path, force: bool = False) -> None:
        """Remove a worktree the caller found clean (status). git's own check would run git status
        inside each submodule, under the submodule's own configuration (the agent's to write): it is
        made here instead, and git told --force. A worktree with a submodule is refused, as git
        refuses it, unless `force`."""
        env = self.env_for(path)
        if not force:  # (a forced remove takes a submodule too: nothing to look for)
            entries = git(["ls-files", "-s", "-z"], path, env=env).stdout.split(b"\0")
            gitlinks = [e.partition(b"\t")[2].decode("utf-8", "replace") for e in entries if e.startswith(b"160000 ")]
            if gitlinks:
                raise FleetError(f"{path} holds a submodule ({gitlinks[0]}): git does not remove such a worktree "
                                 "without --force", "remove it with --force")
        outside = {k: v for k, v in env.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR")}
        git(["worktree", "remove", "--force", *(["--force"] if force else []), str(path)], self.common_dir, env=outside)

    @contextmanager
    def scratch_worktree(self, commit: str) -> Iterator[Path]:
        """A detached worktree of `commit` in a scratch space of this command's (scratch.py),
        removed afterwards (and, if this process is killed, by the next fleet command)."""
        with scratch.space(self.common_dir) as space:
            where = space / "wt"
            try:
                git(["worktree", "add", "--quiet", "--detach", str(where), commit], self.common_dir)
                yield where
            finally:
                git(["worktree", "remove", "--force", "--force", str(where)], self.common_dir, check=False)
                shutil.rmtree(where, ignore_errors=True)
                self.forget_worktree(where)

    def scratch(self) -> AbstractContextManager[Path]:
        """A scratch directory of this command's own (see scratch.py)."""
        return scratch.space(self.common_dir)

    def clean_scratch(self) -> list[Path]:
        """Remove what killed commands left in the scratch space; what live ones use stays."""
        found = scratch.leftovers(self.common_dir)
        if found:
            scratch.remove(self.common_dir, found)
        return found

    def unfinished_checkout(self, worktree: Path, commit: str) -> tuple[list[str], list[str]]:
        """A worktree whose checkout of `commit` never finished (its `git worktree add` was killed:
        HEAD may not be set yet, the index missing): (work, unwritten). Work: files not in `commit`,
        or that differ from it other than as git's own unfinished write. Unwritten: the files git
        had not written yet, or only the beginning of (git writes a file front to back)."""
        env = {**self.env_for(worktree), "GIT_OPTIONAL_LOCKS": "0"}
        with self.scratch() as space:
            env["GIT_INDEX_FILE"] = str(space / "index")
            git(["read-tree", commit], worktree, env=env)
            git(["update-index", "-q", "--refresh"], worktree, env=env, check=False)  # exit 1: some differ
            listed = git(["diff-files", "-z", "--name-status"], worktree, env=env).stdout.split(b"\0")
            untracked = git(["ls-files", "-z", "-o", "--exclude-standard"], worktree, env=env).stdout
        work = [os.fsdecode(p) for p in untracked.split(b"\0") if p]
        unwritten = []
        for status, rel in zip(listed[::2], listed[1::2], strict=False):
            path = os.fsdecode(rel)
            if status == b"D" or self._begins(commit, path, worktree / path):
                unwritten.append(path)
            else:
                work.append(path)
        return work, unwritten

    def _begins(self, commit: str, path: str, file: Path) -> bool:
        """Whether `file` holds the beginning of `path`'s content in `commit` (all of it included)."""
        try:
            have = file.read_bytes() if not file.is_symlink() else None
        except OSError:
            return False
        blob = git(["cat-file", "blob", f"{commit}:{path}"], self.common_dir, check=False).stdout
        return have is not None and blob.startswith(have)

    def finish_checkout(self, worktree: Path, branch: str, unwritten: list[str]) -> None:
        """Complete the checkout a killed `git worktree add` left (see unfinished_checkout), keeping
        every file it did not write: HEAD is set to the branch, the index made from it, and the
        unwritten files written. The worktree's lock, and the index and HEAD locks git left in its
        git dir, go (nobody but the dead add knew the worktree)."""
        env = self.env_for(worktree)
        admin = Path(out(["rev-parse", "--absolute-git-dir"], worktree, env=env))
        (admin / "index.lock").unlink(missing_ok=True)
        (admin / "HEAD.lock").unlink(missing_ok=True)
        self.worktree_unlock(worktree)
        git(["symbolic-ref", "HEAD", f"refs/heads/{branch}"], worktree, env=env)
        git(["reset", "-q"], worktree, env=env)
        if unwritten:
            paths = b"".join(os.fsencode(p) + b"\0" for p in unwritten)
            git(["checkout-index", "-f", "-z", "--stdin"], worktree, env=env, input=paths)

    def drop_unwritten_record(self, path: Path) -> bool:
        """Remove the record (<common dir>/worktrees/<id>) of a `git worktree add` of `path` killed
        before it had written the record's files: one with an empty commondir makes every `git
        worktree list` fail. git writes HEAD last, and checks nothing out before, so a record
        without HEAD has nothing of anyone's. True if one was removed."""
        want = os.path.join(os.path.realpath(path), ".git")
        root = self.common_dir / "worktrees"
        dropped = False
        for admin in root.iterdir() if root.is_dir() else ():
            gitdir = read_file(str(admin / "gitdir"))
            ours = gitdir == want or (not gitdir and admin.name.startswith(path.name))
            if ours and not (read_file(str(admin / "HEAD")) and read_file(str(admin / "commondir"))):
                shutil.rmtree(admin)
                dropped = True
        return dropped

    def worktree_unlock(self, path: Path) -> None:
        git(["worktree", "unlock", str(path)], self.common_dir, check=False)  # not locked: nothing to do

    def worktree_prune(self) -> None:
        """Every stale worktree record: only when the user asks for it (doctor --fix, prune), as it
        also drops the record of a worktree moved by hand and not yet repaired."""
        git(["worktree", "prune"], self.common_dir)

    def forget_worktree(self, path: Path) -> None:
        """Drop git's record of a worktree at `path` whose directory is gone, and no other record
        (see worktree_prune); a record git left locked while making it included."""
        want = os.path.realpath(path)
        root = self.common_dir / "worktrees"
        for admin in root.iterdir() if root.is_dir() else ():
            gitdir = read_file(str(admin / "gitdir")) or ""
            if gitdir and os.path.realpath(os.path.dirname(gitdir)) == want and not os.path.exists(gitdir):
                shutil.rmtree(admin, ignore_errors=True)

    def is_tracked(self, worktree: Path, path: str) -> bool:
        """Whether the worktree's index holds `path` (relative to the worktree)."""
        return git(["ls-files", "--error-unmatch", "--", path], worktree, check=False,
                   env=self.env_for(worktree)).returncode == 0

    def dirty_paths(self, worktree: Path) -> list[str]:
        """Uncommitted and untracked (not ignored) paths in a worktree."""
        return [path for code, path in self.status(worktree) if code != "!!"]

    def status(self, worktree: Path, *, ignored: bool = False, index: str | None = None) -> list[tuple[str, str]]:
        """(two-letter code, path) for each uncommitted, untracked and, with `ignored`, ignored path
        of a worktree (code "!!"; a directory ignored as a whole is one entry ending in "/"),
        against its own index or the one given."""
        # GIT_OPTIONAL_LOCKS=0: status does not write the index back (a refresh), so it never holds
        # index.lock, which a command killed meanwhile would leave behind in an agent's worktree
        env = {**self.env_for(worktree), "GIT_OPTIONAL_LOCKS": "0", **({"GIT_INDEX_FILE": index} if index else {})}
        # (a sandboxed agent's: never a git run inside a submodule, whose configuration is the agent's
        # to write: a filter there would run outside any sandbox; its own uncommitted work is not seen)
        inside = "dirty" if self.confined(worktree) else "none"
        raw = git(["status", "--porcelain", "-z", "--untracked-files=all", f"--ignore-submodules={inside}",
                   *(["--ignored=matching"] if ignored else [])], worktree, env=env).stdout
        found = []
        entries = iter(raw.split(b"\0"))
        for entry in entries:
            if not entry:
                continue
            found.append((entry[:2].decode(), entry[3:].decode("utf-8", "surrogateescape")))
            if entry[:1] in (b"R", b"C"):
                next(entries, None)
        return found

    def rebased(self, tip: str, onto: str) -> tuple[str | None, str]:
        """`tip` rebased onto `onto` in a scratch worktree of its own, no branch and no work tree of
        anyone's touched (moving the branch is moves.py's: a rebase run in the agent's worktree
        and killed would leave it half rebased): (the new tip, "") or (None, the conflicting paths)."""
        with self.scratch_worktree(tip) as where:
            env = self.env_for(where)
            proc = git(["rebase", "--quiet", onto], where, check=False, env=env)
            if proc.returncode == 0:
                return out(["rev-parse", "HEAD"], where, env=env), ""
            conflicted = out(["diff", "--name-only", "--diff-filter=U"], where, check=False, env=env)
            # its result does not matter: the scratch worktree, half rebased or not, is removed as
            # this block ends, and no branch or work tree of anyone's was touched
            git(["rebase", "--abort"], where, check=False, env=env)
            return None, ", ".join(conflicted.split()) or proc.stderr.decode("utf-8", "replace").strip()
