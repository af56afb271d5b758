"""Refs and objects: pygit2 reads in-process, git's plumbing writes (one `update-ref --stdin`
transaction, `merge-tree --stdin` for a whole batch of merges, `commit-tree`, `mktag`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .. import durable
from .plumbing import (
    MERGE_PINNED,
    ZERO_OID,
    changed_paths,
    git,
    is_ancestor,
    out,
)

if TYPE_CHECKING:
    import pygit2
from .base import RepoBase


class Refs(RepoBase):
    """Branches, tags, commits and trees of the repository."""

    @cached_property
    def pygit(self) -> pygit2.Repository:
        import pygit2

        repo = pygit2.Repository(str(self.git_dir))
        own = os.environ.get("GIT_OBJECT_DIRECTORY")
        if own:  # a sandboxed agent's own store (sandbox_layout.py), as its git reads it
            repo.odb.add_disk_alternate(own)
        return repo

    def resolve(self, rev: str) -> str | None:
        """The commit id `rev` names, or None."""
        import pygit2

        try:
            obj = self.pygit.revparse_single(rev)
            return str(obj.peel(pygit2.Commit).id)
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            return None

    def branch_tips(self) -> dict[str, tuple[str, int]]:
        """Every branch's (tip, commit time), from one `git for-each-ref`."""
        raw = out(["for-each-ref", "--format=%(objectname) %(committerdate:unix) %(symref) %(refname:lstrip=2)",
                   "refs/heads/"], self.common_dir)
        tips = {}
        for line in raw.splitlines():
            oid, stamp, symref, name = line.split(" ", 3)
            if not symref:  # (a branch made a symbolic ref is no branch of its own: not read through)
                tips[name] = (oid, int(stamp or 0))
        return tips

    def ref_value(self, ref: str) -> str | None:
        """What a full ref name holds now, read from disk (not peeled: a tag's own object)."""
        proc = git(["rev-parse", "-q", "--verify", "--end-of-options", ref], self.common_dir, check=False)
        return proc.stdout.decode().strip() or None

    def is_ancestor(self, a: str, b: str) -> bool:
        return is_ancestor(a, b, self.common_dir)

    def branch_tip(self, branch: str) -> str | None:
        import pygit2

        ref = self.pygit.references.get(f"refs/heads/{branch}")
        if ref is None or ref.type == pygit2.enums.ReferenceType.SYMBOLIC:
            return None  # (a symbolic ref, an agent's making: no tip of its own, never the one it names)
        return str(ref.target)

    def valid_branch_name(self, branch: str) -> bool:
        return git(["check-ref-format", "--branch", branch], self.common_dir, check=False).returncode == 0 \
            and not branch.startswith("-")

    def create_branch(self, branch: str, commit: str) -> None:
        """Create a branch; fails (instead of moving it) if it appeared meanwhile."""
        git(["update-ref", "-m", "git-fleet: create agent branch", f"refs/heads/{branch}", commit, ZERO_OID],
            self.common_dir)

    def rename_branch(self, old: str, new: str) -> None:
        """`git branch -m`: the ref, its reflog, and the HEAD of each worktree that has it."""
        git(["branch", "-m", "--end-of-options", old, new], self.common_dir)

    def delete_branch(self, branch: str, expected: str) -> None:
        git(["update-ref", "--no-deref", "-d", f"refs/heads/{branch}", expected], self.common_dir)

    def count_unmerged(self, branch: str, base: str) -> int:
        """Commits on `branch` that `base` does not have."""
        tip, base_tip = self.branch_tip(branch), self.resolve(base)
        if tip is None:
            return 0
        if base_tip is None:
            return int(out(["rev-list", "--count", tip], self.common_dir))
        ahead, _behind = self.pygit.ahead_behind(tip, base_tip)
        return int(ahead)

    def tracked_files(self, rev: str = "HEAD", limit: int = 200_000) -> Iterator[str]:
        """Paths of the tree at `rev` (empty if it does not exist)."""
        if self.resolve(rev) is None:
            return iter(())
        raw = git(["ls-tree", "-r", "-z", "--name-only", "--full-tree", rev], self.common_dir).stdout
        return (p.decode("utf-8", "surrogateescape") for p in raw.split(b"\0")[:limit] if p)

    def merge_trees(self, pairs: list[tuple[str, str]], union: tuple[str, ...] = ()) -> list[MergeResult]:
        """Merge each (ours, theirs) pair of commits in memory, in one `git merge-tree --stdin`.

        Nothing but objects is written: no ref, index or work tree changes. Paths matching
        `union` are merged line-wise (git's union merge driver) instead of conflicting.
        """
        if not pairs:
            return []
        stdin = "".join(f"{a} {b}\n" for a, b in pairs).encode()
        raw = git([*MERGE_PINNED, *self._union_config(union), "merge-tree", "--write-tree", "--stdin", "-z",
                   "--name-only", "--no-messages"], self.common_dir, input=stdin).stdout
        return parse_merge_tree(raw)

    def _union_config(self, union: tuple[str, ...]) -> list[str]:
        """`-c core.attributesFile=F` where F is the user's own attributes file plus a `merge=union`
        line per path, so that no file of the user's is touched."""
        if not union:
            return []
        own = self.config_get("core.attributesFile")
        text = ""
        if own:
            try:
                text = Path(os.path.expanduser(own)).read_text(encoding="utf-8", errors="surrogateescape")
            except OSError:
                text = ""
        text = text + ("\n" if text and not text.endswith("\n") else "") + "".join(f"{p} merge=union\n" for p in union)
        path = self.common_dir / "fleet" / "merge-attributes"
        path.parent.mkdir(exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8", errors="surrogateescape") != text:
            durable.replace(path, text.encode("utf-8", "surrogateescape"))
        return ["-c", f"core.attributesFile={path}"]

    def commit_tree(self, tree: str, parents: list[str], message: str) -> str:
        args = ["commit-tree", tree]
        for p in parents:
            args += ["-p", p]
        return out([*args, "-F", "-"], self.common_dir, input=message.encode())

    def tags_under(self, prefix: str) -> list[str]:
        """Tag names that start with `prefix` (fleet/v1 lists fleet/v1, fleet/v1@2 and fleet/v10)."""
        raw = out(["for-each-ref", "--format=%(refname)", f"refs/tags/{prefix}*"], self.common_dir)
        return [line[len("refs/tags/"):] for line in raw.splitlines() if line]

    def make_tag(self, name: str, commit: str, message: str) -> str:
        """An annotated tag object (not yet a ref), tagged by the user git knows."""
        ident = out(["var", "GIT_COMMITTER_IDENT"], self.common_dir)
        body = f"object {commit}\ntype commit\ntag {name}\ntagger {ident}\n\n{message}\n"
        return out(["mktag"], self.common_dir, input=body.encode())

    def commit_time(self, commit: str) -> int:
        """When `commit` was made, by its committer's clock (a published commit's time)."""
        found = self.pygit.get(commit)
        return int(getattr(found, "commit_time", 0))

    def tree_of(self, commit: str) -> str:
        return out(["rev-parse", f"{commit}^{{tree}}"], self.common_dir)

    def changed_paths(self, old: str, new: str) -> set[str]:
        return set(changed_paths(old, new, self.common_dir))

    def is_published(self, branch: str) -> bool:
        """Whether a remote has the branch (then it is shared, and never rebased)."""
        raw = git(["for-each-ref", "--format=%(refname)", "refs/remotes/"], self.common_dir).stdout.decode()
        return any(ref.split("/", 3)[-1] == branch for ref in raw.split())

    def merge_base(self, a: str, b: str) -> str | None:
        proc = git(["merge-base", a, b], self.common_dir, check=False)
        return proc.stdout.decode().strip() or None

    def last_moves(self, ref: str, count: int = 2) -> list[tuple[str, str, int]]:
        """The last moves of `ref` from its reflog, newest first: (new value, what moved it, when)."""
        proc = git(["log", "-g", f"-{count}", "--format=%H%x00%gs%x00%gd", "--date=unix", ref, "--"],
                   self.common_dir, check=False)
        moves = []
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            oid, message, selector = line.split("\0")
            moves.append((oid, message, int(selector.rsplit("{", 1)[-1].rstrip("}") or 0)))
        return moves


@dataclass(frozen=True)
class MergeResult:
    clean: bool
    tree: str
    conflicts: tuple[str, ...]


def parse_merge_tree(raw: bytes) -> list[MergeResult]:
    """`merge-tree --stdin -z --name-only --no-messages`: per merge, status, tree, conflicted
    paths and an empty field."""
    items = raw.split(b"\0")
    results = []
    i = 0
    while i + 1 < len(items) and items[i]:
        status, tree = items[i].decode(), items[i + 1].decode()
        i += 2
        paths: list[str] = []
        while i < len(items) and items[i]:
            path = items[i].decode("utf-8", "surrogateescape")
            if path not in paths:
                paths.append(path)
            i += 1
        i += 1
        results.append(MergeResult(status == "1", tree, tuple(paths)))
    return results
