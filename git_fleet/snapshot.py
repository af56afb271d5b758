"""A worktree's whole state as git objects, and back, byte for byte.

capture() turns what a worktree holds (its branch tip, its index, its tracked files as they are on
disk, its untracked files) into trees without touching the worktree or its index; restore() makes
a fresh checkout hold exactly that again. teleport/commit.py wraps the trees in a stash-shaped commit.

Two rules keep it lossless:
- What changed on disk is decided by the worktree's own index, with git's racy-entry rules
  (`git diff-files`). A copy of an index gets a new file time, and the copy then trusts the stat
  data of a file rewritten, same size, in the second its index was written: such an edit would
  be left out, and later overwritten.
- A changed or untracked file is stored as the bytes on disk, not as git's clean conversion of
  them (`* text=auto` would turn CRLF into LF), and written back the same way. A path under a
  filter driver (LFS, git-crypt) is the exception: it is stored through its filter, as git
  stores it, so that no plaintext or large payload is pushed where the filter would not push it,
  and it comes back through the filter. Those paths are listed in the snapshot.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from .errors import FleetError
from .gateway.objects import blobs, hash_files
from .gateway.plumbing import git

# hashing a file must neither fail nor warn over line endings (core.safecrlf)
HASHING = ["-c", "core.safecrlf=false"]
REGULAR = ("100644", "100755")


@dataclass(frozen=True)
class State:
    """What a worktree holds: the branch tip, the index, the tracked files on disk, the untracked files."""

    head: str
    index: str  # tree
    work: str  # tree
    untracked: str | None  # tree, None when there are none
    # paths stored through their filter driver; None: every path was (a snapshot made before bytes were kept)
    filtered: tuple[str, ...] | None = ()

    def clean(self, head_tree: str) -> bool:
        return self.index == head_tree and self.work == head_tree and self.untracked is None

    def same(self, other: State) -> bool:
        """The same commit, index, files and untracked files, whichever snapshot format said so."""
        return (self.head, self.index, self.work, self.untracked) == (other.head, other.index, other.work, other.untracked)


def _out(args: list[str], cwd: Path, env: dict[str, str] | None = None, input: bytes | None = None) -> str:
    return git(args, cwd, env=env, input=input).stdout.decode("utf-8", "surrogateescape").strip()


def _z(raw: bytes) -> list[bytes]:
    return [p for p in raw.split(b"\0") if p]


def _nul(paths: list[bytes]) -> bytes:
    return b"".join(p + b"\0" for p in paths)


def git_path(worktree: Path, name: str) -> Path:
    return Path(_out(["rev-parse", "--path-format=absolute", "--git-path", name], worktree))


@contextmanager
def private_index(scratch: Path, seed: Path | None = None) -> Iterator[dict[str, str]]:
    """An environment whose GIT_INDEX_FILE is an index of our own: empty, or a copy of `seed`
    for what reads only entries (write-tree), never for what trusts stat data."""
    fd, path = tempfile.mkstemp(prefix="index-", dir=scratch)
    os.close(fd)
    try:
        if seed is not None and seed.exists():
            with open(seed, "rb") as src, open(path, "wb") as dst:
                dst.write(src.read())
        else:
            os.unlink(path)
        yield {**os.environ, "GIT_INDEX_FILE": path, "GIT_LITERAL_PATHSPECS": "1"}
    finally:
        for p in (path, path + ".lock"):
            with suppress(FileNotFoundError):
                os.unlink(p)


# -- capture ------------------------------------------------------------------------------------

def capture_trees(worktree: Path, scratch: Path) -> State:
    """The worktree's state as trees (see the module's docstring); HEAD must be a commit. Private
    indexes go in `scratch`, a directory of this command's own."""
    head = _out(["rev-parse", "--verify", "HEAD^{commit}"], worktree)
    with private_index(scratch, git_path(worktree, "index")) as env:
        index = _out(["write-tree"], worktree, env=env)  # entries only: the agent's index is never locked
    reading = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    changed = _z(git(["diff-files", "-z", "--name-only"], worktree, env=reading).stdout)
    # diff-files takes entries marked assume-unchanged or skip-worktree at their word; a file of
    # theirs that is there on disk is looked at all the same
    marked = [item[2:] for item in _z(git(["ls-files", "-v", "-z"], worktree).stdout)
              if (item[:1] == b"S" or item[:1].islower()) and os.path.lexists(worktree / os.fsdecode(item[2:]))]
    changed += [p for p in marked if p not in set(changed)]
    # staged files too: their bytes on disk need not be what git's checkout of the staged blob gives
    staged = [p for p in _z(git(["diff-tree", "-r", "-z", "--name-only", "--no-renames", "--diff-filter=AMT",
                                  head, index], worktree).stdout) if p not in set(changed)]
    untracked = [p for p in _z(git(["ls-files", "--others", "--exclude-standard", "-z"], worktree).stdout)
                 if not p.endswith(b"/")]  # refused before (a repository of its own)
    filtered: list[str] = []
    with private_index(scratch) as env:
        git(["read-tree", index], worktree, env=env)
        at_index = _entries(worktree, env, changed + staged)
        gone = [p for p in changed if _gone(worktree, p)]
        present = [p for p in changed if p not in set(gone)]
        if gone:
            git(["update-index", "--force-remove", "-z", "--stdin"], worktree, env=env, input=_nul(gone))
        if present:
            git([*HASHING, "update-index", "--add", "--remove", "-z", "--stdin"], worktree, env=env, input=_nul(present))
        filtered += _keep_bytes(worktree, env, present + staged, at_index)
        work = _out(["write-tree"], worktree, env=env)
    tree = None
    if untracked:
        with private_index(scratch) as env:
            git([*HASHING, "update-index", "--add", "-z", "--stdin"], worktree, env=env, input=_nul(untracked))
            filtered += _keep_bytes(worktree, env, untracked, {})
            tree = _out(["write-tree"], worktree, env=env)
    return State(head, index, work, tree, tuple(sorted(filtered)))


def _gone(worktree: Path, rel: bytes) -> bool:
    """Whether a tracked path is no longer a file of the work tree: deleted, a directory now, or
    beyond a symbolic link (a directory replaced by a link); what is there instead is untracked."""
    path = worktree / os.fsdecode(rel)
    if not os.path.lexists(path) or (path.is_dir() and not path.is_symlink()):
        return True
    parent = path.parent
    while parent != worktree:
        if parent.is_symlink():
            return True
        parent = parent.parent
    return False


def _entries(worktree: Path, env: dict[str, str], paths: list[bytes]) -> dict[bytes, tuple[str, str]]:
    """(mode, blob) of `paths` in the index that `env` names."""
    if not paths:
        return {}
    wanted = set(paths)  # (one listing of the whole index: ls-files takes no pathspec file)
    found = {}
    for item in _z(git(["ls-files", "-s", "-z"], worktree, env=env).stdout):
        meta, _, path = item.partition(b"\t")
        if path in wanted:
            mode, oid, _stage = meta.decode().split()
            found[path] = (mode, oid)
    return found


def _keep_bytes(worktree: Path, env: dict[str, str], paths: list[bytes],
                at_index: dict[bytes, tuple[str, str]]) -> list[str]:
    """Make the private index hold the bytes on disk for `paths` wherever git's clean conversion
    changed them; returns the paths kept in their filtered form (a filter driver's)."""
    entries = _entries(worktree, env, paths)
    regular = [p for p in paths if entries.get(p, ("", ""))[0] in REGULAR]
    if not regular:
        return []
    raw = hash_files(regular, worktree, filters=False, write=True)
    differ = [(p, r) for p, r in zip(regular, raw, strict=True) if r != entries[p][1]]
    if not differ:
        return []
    attrs = _z(git(["check-attr", "-z", "--stdin", "filter"], worktree, input=_nul([p for p, _ in differ])).stdout)
    drivers = {attrs[i]: attrs[i + 2] for i in range(0, len(attrs) - 2, 3)}
    lines, filtered, lossy = [], [], []
    for path, raw_oid in differ:
        mode, clean_oid = entries[path]
        if drivers.get(path, b"unspecified") not in (b"unspecified", b"unset"):
            filtered.append(os.fsdecode(path))
            if _smudged(worktree, path, clean_oid) != (worktree / os.fsdecode(path)).read_bytes():
                lossy.append(f"  {os.fsdecode(path)} (filter={os.fsdecode(drivers[path])})")
            continue
        if at_index.get(path, ("", ""))[1] == clean_oid and \
                _smudged(worktree, path, clean_oid) == (worktree / os.fsdecode(path)).read_bytes():
            continue  # what git's checkout of the index entry gives back: only its stat data differs
        lines.append(f"{mode} {raw_oid}\t".encode() + path)
    if lossy:
        raise FleetError("these files go through a filter driver, which the snapshot keeps, but through it they "
                         "would not come back as they are on disk:\n" + "\n".join(lossy),
                         "line endings are converted around the filter: give these paths an `eol` or `-text` "
                         "attribute in .gitattributes, or convert them yourself, then push again")
    if lines:
        git(["update-index", "-z", "--index-info"], worktree, env=env, input=_nul(lines))
    return filtered


def _smudged(worktree: Path, path: bytes, blob: str) -> bytes:
    return git(["cat-file", "--filters", f"--path={os.fsdecode(path)}", blob], worktree).stdout


# -- restore ------------------------------------------------------------------------------------

def restore(state: State, worktree: Path, scratch: Path) -> None:
    """Make a worktree that is a clean checkout of state.head hold exactly `state` (private indexes
    go in `scratch`)."""
    # the index first, while the files still match the head: a two-way read-tree keeps the
    # stat data of the entries it does not change, so the refresh at the end reads only the
    # changed files
    git(["read-tree", "-m", state.head, state.index], worktree)
    diff = ["diff-tree", "-r", "-z", "--no-renames"]
    for rel in _z(git([*diff, "--name-only", "--diff-filter=D", state.head, state.work], worktree).stdout):
        path = worktree / os.fsdecode(rel)
        path.unlink()
        parent = path.parent
        while parent != worktree and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    changed = _z(git([*diff, "--name-only", "--diff-filter=AMT", state.head, state.work], worktree).stdout)
    # bytes stored as they were on disk go back as they are; the rest through git's checkout, as
    # git itself would write them: what equals the index entry, and what a filter driver stored
    as_stored = {} if state.filtered is None else _differing(worktree, state.index, state.work)
    keep = set(state.filtered or ())
    by_git = [p for p in changed if p not in as_stored or os.fsdecode(p) in keep]
    with private_index(scratch) as env:
        if by_git:
            git(["read-tree", state.work], worktree, env=env)
            git(["checkout-index", "--force", "-z", "--stdin"], worktree, env=env, input=_nul(by_git))
        _write(worktree, [(p, *as_stored[p]) for p in changed if p in as_stored and os.fsdecode(p) not in keep])
        if state.untracked:
            listed = _tree_all(worktree, state.untracked)
            by_git = [p for p in listed if state.filtered is None or os.fsdecode(p) in keep or listed[p][0] not in
                      (*REGULAR, "120000")]
            if by_git:
                git(["read-tree", state.untracked], worktree, env=env)
                git(["checkout-index", "--force", "-z", "--stdin"], worktree, env=env, input=_nul(by_git))
            _write(worktree, [(p, *listed[p]) for p in listed if p not in by_git])
    git(["update-index", "-q", "--refresh"], worktree, check=False)


def _differing(worktree: Path, a: str, b: str) -> dict[bytes, tuple[str, str]]:
    """path -> (mode, blob) in tree `b`, for the paths where `b` differs from `a` (not deleted)."""
    raw = git(["diff-tree", "-r", "-z", "--no-renames", a, b], worktree).stdout.split(b"\0")
    found = {}
    for i in range(0, len(raw) - 1, 2):
        _old_mode, new_mode, _old, new, status = raw[i].decode().lstrip(":").split()
        if status != "D":
            found[raw[i + 1]] = (new_mode, new)
    return found


def _tree_all(worktree: Path, tree: str) -> dict[bytes, tuple[str, str]]:
    found = {}
    for item in _z(git(["ls-tree", "-r", "-z", "--full-tree", tree], worktree).stdout):
        meta, _, path = item.partition(b"\t")
        mode, _type, oid = meta.decode().split()
        found[path] = (mode, oid)
    return found


def _write(worktree: Path, files: list[tuple[bytes, str, str]]) -> None:
    """Write blobs to the work tree as they are: (path, mode, blob); regular files and symlinks."""
    files = [f for f in files if f[1] in (*REGULAR, "120000")]
    umask = os.umask(0)
    os.umask(umask)
    for (rel, mode, _), (_, chunks) in zip(files, blobs([oid for _, _, oid in files], worktree), strict=True):
        path = worktree / os.fsdecode(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path) and (path.is_symlink() or not path.is_file()):
            if path.is_dir() and not path.is_symlink():
                raise FleetError(f"{path} is a directory where the snapshot has a file")
            path.unlink()
        if mode == "120000":
            os.symlink(os.fsdecode(b"".join(chunks)), path)
            continue
        with open(path, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        os.chmod(path, (0o777 if mode == "100755" else 0o666) & ~umask)
