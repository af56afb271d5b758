"""The git gateway, with plumbing.py: nothing else in git-fleet reaches git.

git's own plumbing is used where it is fastest (merges and forecasts through merge-tree,
worktrees, status); pygit2 reads refs and objects in-process. pygit2 is imported only when first needed, so the
commit hook never pays for it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import time
from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .. import scratch
from ..errors import FleetError, UsageError
from . import plumbing
from .plumbing import (
    EMPTY_TREE,
    MAIN_RECORD,
    MERGE_PINNED,
    ZERO_OID,
    changed_paths,
    git,
    hash_files,
    is_ancestor,
    main_worktree_of,
    out,
    parse_worktree_list,
    read_file,
    rebasing,
)

if TYPE_CHECKING:
    import pygit2

__all__ = ["EMPTY_TREE", "ZERO_OID", "Repo", "Worktree", "git", "out"]


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
LOCATING = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")


def _busy_branch(worktree: str) -> str | None:
    """The branch a detached worktree is in the middle of rebasing or bisecting, from its git dir
    (as git's own find_shared_symref reads it)."""
    dotgit = os.path.join(worktree, ".git")
    if os.path.isfile(dotgit):
        link = read_file(dotgit) or ""
        git_dir = os.path.join(worktree, link[8:]) if link.startswith("gitdir: ") else dotgit
    else:  # a .git directory, or none: git lists the git dir itself for a main worktree kept apart
        git_dir = dotgit if os.path.isdir(dotgit) else worktree
    ref = rebasing(git_dir)
    return ref[11:] if ref else read_file(os.path.join(git_dir, "BISECT_START")) or None  # a short name


def worktrees_of(raw: bytes) -> list[Worktree]:
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
            busy=_busy_branch(fields["worktree"]) if detached else None,
            locked=fields.get("locked"),
        ))
    return trees


class Repo:
    """A repository seen from one of its worktrees (or from a bare repository)."""

    def __init__(self, common_dir: Path, git_dir: Path, toplevel: Path | None, bare: bool):
        self.common_dir = common_dir
        self.git_dir = git_dir
        self.toplevel = toplevel
        self.bare = bare

    @classmethod
    def discover(cls, cwd: str | os.PathLike[str] | None = None) -> Repo:
        proc = git(["rev-parse", "--path-format=absolute", "--git-common-dir", "--git-dir",
                    "--is-bare-repository", "--show-object-format", "--show-toplevel"], cwd, check=False)
        lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines()
        if len(lines) < 4:
            where = Path(cwd or os.getcwd())
            said = proc.stderr.decode("utf-8", "replace")
            if "safe.directory" in said:  # owned by another user: git's own words say how to trust it
                first = said.strip().splitlines()[0].removeprefix("fatal: ")
                advice = [line.strip() for line in said.splitlines() if "git config --global" in line]
                raise UsageError(f"{first} ({where})", advice[0] if advice else "see `git help config`: safe.directory")
            raise UsageError(f"not a git repository: {where}", "run git-fleet inside a git repository")
        if lines[3] != "sha1":
            raise UsageError(f"{lines[0]}: git-fleet does not work with {lines[3].upper()} repositories yet",
                             "it needs a repository with SHA-1 object names, git's default "
                             "(the library it reads objects with cannot open others)")
        bare = lines[2] == "true"
        top = Path(lines[4]) if len(lines) > 4 and not bare else None
        if top is None and not bare:
            raise UsageError("this command needs a work tree", "run it in the repository's main worktree")
        return cls(Path(lines[0]), Path(lines[1]), top, bare)

    # -- worktrees ------------------------------------------------------------------------------

    def worktrees(self) -> list[Worktree]:
        trees = worktrees_of(git(["worktree", "list", "--porcelain", "-z"], self.common_dir).stdout)
        if trees and not trees[0].bare and trees[0].path == self.common_dir and self.main_worktree is not None:
            # a git dir kept apart (--separate-git-dir, core.worktree): git names the git dir itself
            # as the main worktree; the work tree is where its files are
            trees[0] = replace(trees[0], path=self.main_worktree)
        return trees

    def env_for(self, worktree: Path) -> dict[str, str]:
        """The environment for git, or a command that runs git, in `worktree`: the variables that
        would take it to another worktree are dropped (see LOCATING), and set where git cannot find
        the repository from the work tree itself (a core.worktree main worktree has no .git)."""
        env = {k: v for k, v in os.environ.items() if k not in LOCATING}
        if worktree == self.main_worktree and not os.path.lexists(worktree / ".git"):
            env.update(GIT_DIR=str(self.common_dir), GIT_WORK_TREE=str(worktree))
        return env

    @cached_property
    def main_worktree(self) -> Path | None:
        """The main worktree, where the orchestrator works; None for a bare repository (see
        plumbing.main_worktree_of for a git dir kept apart from its work tree)."""
        if self.toplevel is not None and self.git_dir == self.common_dir:
            return self.toplevel  # this is it: the main worktree's git dir is the common dir
        found = main_worktree_of(str(self.common_dir))
        return Path(found) if found else None

    def is_main_worktree(self) -> bool:
        return self.toplevel is not None and self.toplevel == self.main_worktree

    def record_main_worktree(self) -> None:
        """Remember the main worktree where git itself cannot tell it (see main_worktree_of)."""
        if self.toplevel is None or self.git_dir != self.common_dir or self.common_dir.name == ".git":
            return
        from ..files import write_atomic

        record = self.common_dir / MAIN_RECORD
        record.parent.mkdir(exist_ok=True)
        if read_file(str(record)) != str(self.toplevel):
            write_atomic(record, str(self.toplevel) + "\n")

    def checked_out(self, branch: str) -> Path | None:
        """The work tree that has `branch` checked out, as git records it (a branch is checked out
        in one worktree at most, rebased or bisected there included); None when none has."""
        tree = self.worktree_with(branch)
        return tree.path if tree is not None else None

    def worktree_with(self, branch: str, *, prunable: bool = False) -> Worktree | None:
        """The worktree that has `branch` checked out (see checked_out), as `git worktree list` has it;
        with `prunable`, one whose directory is gone counts too (git still refuses to move the
        branch under it)."""
        return next((w for w in self.worktrees() if w.has(branch) or (prunable and w.prunable and not w.bare
                                                                       and branch in (w.branch, w.busy))), None)

    def worktree_add(self, path: Path, branch: str) -> None:
        git(["worktree", "add", "--quiet", str(path), branch], self.common_dir)

    def worktree_remove(self, path: Path, force: bool = False) -> None:
        git(["worktree", "remove", *(["--force", "--force"] if force else []), str(path)], self.common_dir)

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
        raw = git(["status", "--porcelain", "-z", "--untracked-files=all", "--ignore-submodules=none",
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

    # -- refs and objects (pygit2) ----------------------------------------------------------------

    @cached_property
    def pygit(self) -> pygit2.Repository:
        import pygit2

        return pygit2.Repository(str(self.git_dir))

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
        raw = out(["for-each-ref", "--format=%(objectname) %(committerdate:unix) %(refname:lstrip=2)", "refs/heads/"],
                  self.common_dir)
        tips = {}
        for line in raw.splitlines():
            oid, stamp, name = line.split(" ", 2)
            tips[name] = (oid, int(stamp or 0))
        return tips

    def ref_value(self, ref: str) -> str | None:
        """What a full ref name holds now, read from disk (not peeled: a tag's own object)."""
        proc = git(["rev-parse", "-q", "--verify", "--end-of-options", ref], self.common_dir, check=False)
        return proc.stdout.decode().strip() or None

    def is_ancestor(self, a: str, b: str) -> bool:
        return is_ancestor(a, b, self.common_dir)

    def branch_tip(self, branch: str) -> str | None:
        ref = self.pygit.references.get(f"refs/heads/{branch}")
        return str(ref.resolve().target) if ref is not None else None

    def valid_branch_name(self, branch: str) -> bool:
        return git(["check-ref-format", "--branch", branch], self.common_dir, check=False).returncode == 0 \
            and not branch.startswith("-")

    def create_branch(self, branch: str, commit: str) -> None:
        """Create a branch; fails (instead of moving it) if it appeared meanwhile."""
        git(["update-ref", "-m", "git-fleet: create agent branch", f"refs/heads/{branch}", commit, ZERO_OID],
            self.common_dir)

    def delete_branch(self, branch: str, expected: str) -> None:
        git(["update-ref", "-d", f"refs/heads/{branch}", expected], self.common_dir)

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

    # -- hooks and config -----------------------------------------------------------------------------

    def config_get(self, key: str) -> str | None:
        proc = git(["config", "--get", key], self.common_dir, check=False)
        return proc.stdout.decode("utf-8", "surrogateescape").strip() if proc.returncode == 0 else None

    def config_set(self, key: str, value: str | None) -> None:
        """Set a key in this repository's own config (None: unset it)."""
        if value is None:
            git(["config", "--local", "--unset-all", key], self.common_dir, check=False)
        else:
            git(["config", "--local", key, value], self.common_dir)

    def register_worktree(self, agent: str, path: Path | None) -> None:
        """Record (None: forget) where this clone keeps an agent's worktree: per clone, so in the
        repository's own config, never in the committed .gitfleet.toml."""
        if path is None:
            git(["config", "--local", "--remove-section", f"{plumbing.REGISTERED}.{agent}"], self.common_dir, check=False)
        else:
            git(["config", "--local", f"{plumbing.REGISTERED}.{agent}.worktree", str(path)], self.common_dir)

    def registered_worktrees(self) -> dict[str, Path]:
        return {name: Path(p) for name, p in plumbing.local_settings(str(self.common_dir))[1].items()}

    def config_origin(self, key: str) -> str | None:
        proc = git(["config", "--show-scope", "--get", key], self.common_dir, check=False)
        return proc.stdout.decode().split("\t", 1)[0] if proc.returncode == 0 else None

    # -- merges (git's plumbing: one merge-tree process for a whole batch) ---------------------------

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
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8", errors="surrogateescape")
            os.replace(tmp, path)
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

    def update_refs(self, updates: list[tuple[str, str, str]], message: str, *, away_from_head: bool = False) -> None:
        """Move every (ref, new, old) at once or none: one transaction, each checked against its old
        value. away_from_head: run it from a git dir of ours whose HEAD points at no branch, so that
        git takes no HEAD.lock (to log the move in the reflog of a HEAD that points at a moved
        branch): a lock a killed git would leave empty, like a live command's. The branch's own
        reflog still records the move."""
        lines = ["start"] + [f"update {ref} {new} {old}" for ref, new, old in updates] + ["prepare", "commit"]
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
            from ..files import write_atomic

            where.mkdir(parents=True, exist_ok=True)
            write_atomic(where / "HEAD", "ref: refs/fleet/ref-context\n")
            write_atomic(where / "commondir", "../..\n")
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
                shutil.copy2(index, copy)
            yield index, copy, {**self.env_for(worktree), "GIT_INDEX_FILE": str(copy), **NO_FSMONITOR}

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
                pass

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

    def tree_of(self, commit: str) -> str:
        return out(["rev-parse", f"{commit}^{{tree}}"], self.common_dir)

    def changed_paths(self, old: str, new: str) -> set[str]:
        return set(changed_paths(old, new, self.common_dir))

    def is_published(self, branch: str) -> bool:
        """Whether a remote has the branch (then it is shared, and never rebased)."""
        raw = git(["for-each-ref", "--format=%(refname)", "refs/remotes/"], self.common_dir).stdout.decode()
        return any(ref.split("/", 3)[-1] == branch for ref in raw.split())

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
            git(["rebase", "--abort"], where, check=False, env=env)
            return None, ", ".join(conflicted.split()) or proc.stderr.decode("utf-8", "replace").strip()

    def merge_base(self, a: str, b: str) -> str | None:
        proc = git(["merge-base", a, b], self.common_dir, check=False)
        return proc.stdout.decode().strip() or None

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


# the git processes of a move hold the fleet's lock (lock.lent_to_git): none may start a daemon that
# would keep it, as an fsmonitor hook does (git passes its environment on to what it starts)
NO_FSMONITOR = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.fsmonitor", "GIT_CONFIG_VALUE_0": "false"}


class IndexLocked(FleetError):
    """A work tree's index.lock is there already: someone else's, never removed here."""


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
