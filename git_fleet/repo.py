"""The one place that talks to git.

git's own plumbing is used where it is fastest (staged changes in a hook, worktrees, status);
pygit2 reads refs and objects in-process. pygit2 is imported only when first needed, so the
commit hook never pays for it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from .errors import FleetError, GitError, UsageError

if TYPE_CHECKING:
    import pygit2

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
ZERO_OID = "0" * 40


def git(args: Sequence[str], cwd: str | os.PathLike[str] | None = None, *, input: bytes | None = None,
        env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run git; raise GitError naming the command and git's own message when it fails."""
    cmd = ["git", *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, env=env)
    except FileNotFoundError:
        raise FleetError("git is not installed or not on PATH", "install git 2.38 or newer") from None
    if check and proc.returncode != 0:
        said = proc.stderr.decode("utf-8", "replace").strip().replace("fatal: ", "").replace("error: ", "")
        raise GitError(f"'git {' '.join(args[:3])}' failed: {said or 'exit ' + str(proc.returncode)}")
    return proc


def out(args: Sequence[str], cwd: str | os.PathLike[str] | None = None, **kw: object) -> str:
    return git(args, cwd, **kw).stdout.decode("utf-8", "surrogateescape").rstrip("\n")  # type: ignore[arg-type]


@dataclass(frozen=True)
class Worktree:
    path: Path
    head: str | None
    branch: str | None  # short name, None when detached
    bare: bool = False
    prunable: bool = False


def parse_worktree_list(raw: bytes) -> list[Worktree]:
    trees: list[Worktree] = []
    for block in raw.split(b"\0\0"):
        fields: dict[str, str] = {}
        for item in block.split(b"\0"):
            if not item:
                continue
            key, _, value = item.decode("utf-8", "surrogateescape").partition(" ")
            fields[key] = value
        if "worktree" not in fields:
            continue
        branch = fields.get("branch")
        trees.append(Worktree(
            path=Path(fields["worktree"]),
            head=fields.get("HEAD"),
            branch=branch.removeprefix("refs/heads/") if branch else None,
            bare="bare" in fields,
            prunable="prunable" in fields,
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
    def discover(cls, cwd: str | os.PathLike[str] | None = None) -> "Repo":
        proc = git(["rev-parse", "--path-format=absolute", "--git-common-dir", "--git-dir",
                    "--is-bare-repository", "--show-toplevel"], cwd, check=False)
        lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines()
        if len(lines) < 3:
            where = Path(cwd or os.getcwd())
            raise UsageError(f"not a git repository: {where}", "run git-fleet inside a git repository")
        bare = lines[2] == "true"
        top = Path(lines[3]) if len(lines) > 3 and not bare else None
        if top is None and not bare:
            raise UsageError("this command needs a work tree", "run it in the repository's main worktree")
        return cls(Path(lines[0]), Path(lines[1]), top, bare)

    # -- worktrees ------------------------------------------------------------------------------

    def worktrees(self) -> list[Worktree]:
        return parse_worktree_list(git(["worktree", "list", "--porcelain", "-z"], self.common_dir).stdout)

    @cached_property
    def main_worktree(self) -> Path | None:
        """The main worktree, where the orchestrator works; None for a bare repository."""
        first = self.worktrees()[0]
        return None if first.bare else first.path

    def is_main_worktree(self) -> bool:
        return self.toplevel is not None and self.toplevel == self.main_worktree

    def worktree_add(self, path: Path, branch: str) -> None:
        git(["worktree", "add", "--quiet", str(path), branch], self.common_dir)

    def worktree_remove(self, path: Path, force: bool = False) -> None:
        git(["worktree", "remove", *(["--force", "--force"] if force else []), str(path)], self.common_dir)

    def worktree_prune(self) -> None:
        git(["worktree", "prune"], self.common_dir)

    def dirty_paths(self, worktree: Path) -> list[str]:
        """Uncommitted and untracked (not ignored) paths in a worktree."""
        raw = git(["status", "--porcelain", "-z", "--untracked-files=all", "--ignore-submodules=none"],
                  worktree).stdout
        paths = []
        entries = iter(raw.split(b"\0"))
        for entry in entries:
            if not entry:
                continue
            paths.append(entry[3:].decode("utf-8", "surrogateescape"))
            if entry[:1] in (b"R", b"C"):
                next(entries, None)
        return paths

    # -- refs and objects (pygit2) ----------------------------------------------------------------

    @cached_property
    def pygit(self) -> "pygit2.Repository":
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

    def read_blob(self, rev: str, path: str) -> bytes | None:
        try:
            obj = self.pygit.revparse_single(f"{rev}:{path}")
        except (KeyError, ValueError):
            return None
        data = getattr(obj, "data", None)
        return data if isinstance(data, bytes) else None

    def tracked_files(self, rev: str = "HEAD", limit: int = 200_000) -> Iterator[str]:
        """Paths of the tree at `rev` (empty if it does not exist)."""
        if self.resolve(rev) is None:
            return iter(())
        raw = git(["ls-tree", "-r", "-z", "--name-only", "--full-tree", rev], self.common_dir).stdout
        return (p.decode("utf-8", "surrogateescape") for p in raw.split(b"\0")[:limit] if p)

    # -- hooks and config -----------------------------------------------------------------------------

    def config_get(self, key: str, *, local_only: bool = False) -> str | None:
        proc = git(["config", *(["--local"] if local_only else []), "--get", key], self.common_dir, check=False)
        return proc.stdout.decode("utf-8", "surrogateescape").strip() if proc.returncode == 0 else None

    def config_origin(self, key: str) -> str | None:
        proc = git(["config", "--show-scope", "--get", key], self.common_dir, check=False)
        return proc.stdout.decode().split("\t", 1)[0] if proc.returncode == 0 else None


# -- the hot path: used by the hooks, no pygit2 ---------------------------------------------------

@dataclass(frozen=True)
class Here:
    """Where a hook runs: enough to decide whose zone applies."""

    common_dir: Path
    git_dir: Path
    toplevel: Path | None
    head_ref: str | None  # "refs/heads/x", or None when detached


def here() -> Here:
    proc = git(["rev-parse", "--path-format=absolute", "--git-common-dir", "--git-dir", "--show-toplevel"],
               check=False)
    lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines()
    if len(lines) < 2:
        raise UsageError("not a git repository", "run the hook from inside a repository")
    git_dir = Path(lines[1])
    head_ref = None
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            head_ref = head[5:]
    except OSError:
        pass
    return Here(Path(lines[0]), git_dir, Path(lines[2]) if len(lines) > 2 else None, head_ref)


def main_worktree_of(common_dir: Path) -> Path | None:
    """The main worktree from the common dir: `<top>/.git` is the usual case; else ask git."""
    if common_dir.name == ".git" and (common_dir / "HEAD").exists() and (common_dir.parent / ".git").is_dir():
        return common_dir.parent
    first = parse_worktree_list(git(["worktree", "list", "--porcelain", "-z"], common_dir).stdout)[0]
    return None if first.bare else first.path


@dataclass(frozen=True)
class Change:
    status: str  # A, M, D, R, C, T, U (git's letters)
    paths: tuple[str, ...]  # one path, or (old, new) for a rename or copy


def parse_name_status(raw: bytes) -> list[Change]:
    items = raw.split(b"\0")
    changes = []
    i = 0
    while i < len(items) and items[i]:
        status = items[i].decode()[:1]
        n = 2 if status in "RC" else 1
        paths = tuple(p.decode("utf-8", "surrogateescape") for p in items[i + 1 : i + 1 + n])
        changes.append(Change(status, paths))
        i += 1 + n
    return changes


def staged_changes(cwd: Path | None = None) -> list[Change]:
    """What the commit being made changes, from the index git names in GIT_INDEX_FILE."""
    head = git(["rev-parse", "-q", "--verify", "HEAD^{commit}"], cwd, check=False)
    against = head.stdout.decode().strip() if head.returncode == 0 else EMPTY_TREE
    raw = git(["diff-index", "--cached", "-z", "--name-status", "-M", "--no-ext-diff", against], cwd).stdout
    return parse_name_status(raw)


def commits_touching(tips: Iterable[str], exclude: Iterable[str], cwd: Path) -> list[tuple[str, list[str]]]:
    """(commit, paths it changes) for each commit reachable from `tips` and not from `exclude`.

    A merge commit counts only for the paths where it differs from every parent (an edit made
    in the merge itself); what it brings in from a parent was checked on that parent's side.
    """
    args = ["log", "-z", "--no-renames", "--name-only", "--cc", "--format=%x01%H", *tips,
            "--not", *exclude, "--"]
    raw = git(args, cwd).stdout
    result: list[tuple[str, list[str]]] = []
    for chunk in raw.split(b"\x01")[1:]:
        parts = [p for p in chunk.replace(b"\n", b"\0").split(b"\0") if p]
        if not parts:
            continue
        result.append((parts[0].decode(), [p.decode("utf-8", "surrogateescape") for p in parts[1:]]))
    return result
