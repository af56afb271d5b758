"""The remote as the fleet's meeting point: narrow fetches of the fleet's shared refs into this
clone's tracking refs, compare-and-swap pushes (atomic: every ref with the value it must have, or
none moves), and the small commits that carry the shared state.

Why these git commands (measured with git 2.39 on loopback): a push receives the remote's whole
list of refs whatever it sends, so the shared refs are kept few; a fetch whose refspecs name a
prefix asks protocol v2 for that prefix alone, which `ls-remote` never does (its patterns match
the end of a name). `--force-with-lease=REF:OLD` is a true compare-and-swap (REF: with nothing
after it, the ref must not exist): of many pushes against one old value, one lands and the others
are told "stale info", or, when both passed the check, "failed to update ref". A push of the
object a ref already holds reports success, so every commit sent here is unique.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FleetError
from .plumbing import git

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pygit2

SHARED = "refs/fleet/"  # on the remote
TRACKING = "refs/fleet-remote/"  # here: refs/fleet-remote/REMOTE/..., what the last fetch saw
# a push lost to another that changed a ref first (the lease, or the remote's own check)
_LOST = ("stale info", "failed to update ref", "cannot lock ref", "atomic transaction failed", "fetch first",
         "non-fast-forward")


class Unreachable(FleetError):
    """The remote cannot be reached (or would not talk): nothing was changed on it."""


@dataclass
class Pushed:
    """What a compare-and-swap push did: every ref moved (won), another push changed one first
    (lost), or the remote refused it (refused: its words, a hook's lines among them)."""
    won: bool
    lost: bool = False
    refused: str = ""
    flags: dict[str, str] = field(default_factory=dict)  # ref -> git's summary of it


@dataclass(frozen=True)
class Update:
    """One ref of a push: its new value (None: delete it) if it holds `old` now (None: if it does
    not exist)."""
    ref: str
    new: str | None
    old: str | None


def reason(raw: bytes) -> str:
    """git's reason: its first fatal: or error: line (what follows is advice), else its last line."""
    lines = [ln.strip() for ln in raw.decode("utf-8", "replace").splitlines() if ln.strip()]
    said = next((ln for ln in lines if ln.startswith(("fatal: ", "error: "))), lines[-1] if lines else "git failed")
    return said.removeprefix("fatal: ").removeprefix("error: ")


def tracking(remote: str) -> str:
    return f"{TRACKING}{remote}/"


def url_of(cwd: Path, remote: str) -> str:
    return git(["config", "--get", f"remote.{remote}.url"], cwd, check=False).stdout.decode().strip() or remote


def unreachable(cwd: Path, remote: str, raw: bytes) -> Unreachable:
    return Unreachable(f"cannot reach remote '{remote}' ({url_of(cwd, remote)}): {reason(raw)}",
                       f"nothing was recorded; check it with `git fetch {remote}`, and try again when it answers")


def fetch(cwd: Path, remote: str, prefixes: list[str], lock: Path, since: float | None = None) -> None:
    """Bring the remote's refs under refs/fleet/PREFIX into refs/fleet-remote/REMOTE/PREFIX, those
    gone there deleted here. One fetch at a time per clone (`lock`, whose time says when the
    remote last answered): two would race on the same tracking refs, and the loser would fail.
    Skipped if one that began after `since` answered while this one waited for the lock."""
    specs = [f"+{SHARED}{p}*:{tracking(remote)}{p}*" for p in prefixes]
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if since is not None and os.fstat(fd).st_mtime >= since and os.fstat(fd).st_size:
            return
        began = time.time()
        # --atomic: the refs change together at the end (git prunes first, without it), never half
        proc = git(["-c", "protocol.version=2", "fetch", "--atomic", "--quiet", "--prune", "--no-tags", "--no-write-fetch-head",
                    "--no-auto-gc", "--no-recurse-submodules", remote, *specs], cwd, check=False)
        if proc.returncode == 0:
            os.pwrite(fd, b"1", 0)  # (an empty file is one never fetched into)
            # when it began, not ended: what it brought is the remote as it was then at the latest
            os.utime(fd, (began, began))  # when the remote last answered, for the age of what is shown
        said = unreachable(cwd, remote, proc.stderr) if proc.returncode != 0 else None
        with contextlib.suppress(OSError):  # (for those that show the last fetched state without fetching)
            if said is not None:
                lock.with_name(UNANSWERED).write_text(said.message + "\n", encoding="utf-8")
            else:
                lock.with_name(UNANSWERED).unlink(missing_ok=True)
    finally:
        os.close(fd)
    if said is not None:
        raise said


def push_branch(cwd: Path, remote: str, branch: str, also: Update | None = None,
                key: Path | None = None, tip: str | None = None) -> tuple[bool, str]:
    """A branch pushed as git pushes it (never forced, the pre-push hooks run), with `also` (a
    compare-and-swap: an agent's hold renewed) in the same atomic push: whether it landed, and the
    remote's words (its refusal's). `key`: the machine's, which signs the push where the remote
    asks (signing). `tip`: the commit to push, where `cwd`'s repository has no such branch (a
    sandboxed agent's: its pre-push hooks do not run; the server's judge it)."""
    extra = ["--atomic", f"--force-with-lease={also.ref}:{also.old or ''}"] if also else []
    proc = git([*signing(key), "push", "--porcelain", "--no-recurse-submodules", *extra, remote,
                f"{tip or f'refs/heads/{branch}'}:refs/heads/{branch}", *([f"{also.new}:{also.ref}"] if also else [])],
               cwd, check=False)
    if proc.returncode == 0:
        return True, ""
    lines = [ln.removeprefix("remote:").strip() for ln in proc.stderr.decode("utf-8", "replace").splitlines()
             if ln.strip() and not ln.startswith(("hint:", "To ", _UNASKED))]
    summary = [ln.split("\t")[2] for ln in proc.stdout.decode("utf-8", "replace").splitlines() if ln.count("\t") == 2]
    return False, "; ".join([*summary, *lines][:4]) or reason(proc.stderr)


def fetch_heads(cwd: Path, remote: str, lock: Path) -> dict[str, str]:
    """The remote's branches brought here, into refs/fleet-remote/REMOTE/heads/ (never the
    person's refs/remotes/, which a `git fetch` of theirs may be writing at the same time), one
    such fetch at a time per clone (`lock`): branch -> commit."""
    where = f"{tracking(remote)}heads/"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = git(["fetch", "--atomic", "--quiet", "--prune", "--no-tags", "--no-write-fetch-head",
                    "--no-recurse-submodules", remote, f"+refs/heads/*:{where}*"], cwd, check=False)
        if proc.returncode != 0:
            raise unreachable(cwd, remote, proc.stderr)
        listed = git(["for-each-ref", "--format=%(objectname) %(refname)", where], cwd).stdout.decode()
    finally:
        os.close(fd)
    return {ref[len(where):]: oid for oid, _, ref in (line.partition(" ") for line in listed.splitlines())}


def fetch_tags(cwd: Path, remote: str, prefix: str) -> None:
    """The remote's tags under refs/tags/PREFIX brought here; one here that differs is kept, and
    said (git's "would clobber existing tag")."""
    # (not --quiet: git then says nothing of a tag it would clobber, which is told apart by that)
    proc = git(["fetch", "--no-progress", "--no-write-fetch-head", "--no-recurse-submodules", remote,
                f"refs/tags/{prefix}*:refs/tags/{prefix}*"], cwd, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").splitlines()
        clobbered = [ln.strip() for ln in lines if "would clobber" in ln or "[rejected]" in ln]
        if clobbered:
            raise FleetError(f"a checkpoint tag here differs from remote '{remote}''s: {'; '.join(clobbered[:3])}",
                             f"compare them (git ls-remote --tags {remote} 'refs/tags/{prefix}*'), and keep one")
        raise unreachable(cwd, remote, proc.stderr)


def fetch_branch(cwd: Path, remote: str, branch: str) -> str | None:
    """The remote's `branch` brought here (into refs/remotes/REMOTE/BRANCH): its commit, or None
    when the remote has no such branch."""
    proc = git(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", remote,
                f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}"], cwd, check=False)
    if proc.returncode != 0:
        if b"couldn't find remote ref" in proc.stderr:
            return None
        raise unreachable(cwd, remote, proc.stderr)
    found = git(["rev-parse", "-q", "--verify", f"refs/remotes/{remote}/{branch}^{{commit}}"], cwd, check=False)
    return found.stdout.decode().strip() or None


@contextlib.contextmanager
def reading(lock: Path) -> Iterator[None]:
    """While the tracking refs are read: no fetch of this clone's writes them meanwhile."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield  # (never fetched into: nothing writes them)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


UNANSWERED = "unanswered"  # next to a fetch's lock: why the last fetch got no answer


def unanswered(lock: Path) -> str | None:
    """Why the last fetch under `lock` got no answer from the remote; None if it did."""
    try:
        return lock.with_name(UNANSWERED).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def fetched_at(lock: Path) -> float | None:
    try:
        st = os.stat(lock)
    except OSError:
        return None
    return st.st_mtime if st.st_size else None


def signing(key: Path | None) -> list[str]:
    """git's options that sign a push with the machine's SSH `key` (a push certificate, `git push
    --signed`) where the remote asks for one (a server that checks which machine pushes); none
    without a key. Put before `push`, with push's own --signed=if-asked."""
    return ["-c", "gpg.format=ssh", "-c", f"user.signingKey={key}", "-c", "push.gpgSign=if-asked"] if key else []


_UNASKED = "warning: not sending a push certificate"  # (git's, where the remote does not ask for one)


def push(cwd: Path, remote: str, updates: list[Update], verify: bool = False, key: Path | None = None) -> Pushed:
    """Move every ref of `updates` from its old value to its new one in one atomic push, or none.
    `verify`: run the pre-push hooks (a push of work: git-lfs sends its objects from there).
    `key`: the machine's, which signs the push where the remote asks (signing)."""
    args = [*signing(key), "push", "--porcelain", "--quiet", *([] if verify else ["--no-verify"]),
            "--no-recurse-submodules"]
    if len(updates) > 1:
        args.append("--atomic")
    args += [f"--force-with-lease={u.ref}:{u.old or ''}" for u in updates]
    args.append(remote)
    args += [f"{u.new or ''}:{u.ref}" for u in updates]
    proc = git(args, cwd, check=False)
    flags: dict[str, str] = {}
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and len(parts[0]) == 1:
            flags[parts[1].rpartition(":")[2]] = parts[2]
    if proc.returncode == 0:
        return Pushed(True, flags=flags)
    asked = b"\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith(_UNASKED.encode()))
    if not flags and key is not None and (b"sign" in asked or str(key).encode() in asked):  # (it never left here)
        raise FleetError(f"git could not sign the push with this machine's key {key}: {reason(asked)}",
                         "ssh-keygen -Y sign must work with it (OpenSSH 8.1 or later); a key of the wrong shape can "
                         "be removed, and another made by git fleet-init --remote with a new machine id")
    if not flags:
        raise unreachable(cwd, remote, proc.stderr)
    said = " ".join(flags.values())
    if "remote failure" in said:  # (it may have taken the change: the caller looks)
        raise unreachable(cwd, remote, proc.stderr or said.encode())
    if any(word in said for word in _LOST) and "hook declined" not in said:
        return Pushed(False, lost=True, flags=flags)
    remote_lines = [ln.removeprefix("remote:").strip() for ln in proc.stderr.decode("utf-8", "replace").splitlines()
                    if ln.startswith("remote:") and ln.removeprefix("remote:").strip()]
    words = "; ".join(remote_lines) or next((s for s in flags.values() if "atomic" not in s), said)
    return Pushed(False, refused=words, flags=flags)


def refs_under(repo: pygit2.Repository, prefix: str) -> dict[str, str]:
    """The refs here under `prefix`, by the rest of their name."""
    found = {}
    for ref in repo.references.iterator():
        if ref.name.startswith(prefix):
            found[ref.name[len(prefix):]] = str(ref.target)
    return found


def set_tracking(repo: pygit2.Repository, lock: Path, refs: dict[str, str | None]) -> None:
    """What this clone now knows the remote holds at `refs` (after a push of its own that landed),
    unless a fetch is writing them just now (`lock`): git's fetch fails on a ref that changes
    under it. Only a cache: a step taken on a stale value loses its compare-and-swap, and fetches."""
    import pygit2

    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for ref, new in refs.items():
            try:
                if new is None:
                    repo.references.delete(ref)
                else:
                    repo.references.create(ref, pygit2.Oid(hex=new), force=True)
            except (KeyError, pygit2.GitError):
                pass  # (another process of this clone wrote it just now)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def make_commit(repo: pygit2.Repository, message: str, files: dict[str, bytes], parent: str | None) -> str:
    """A commit of `files` with `message`, on `parent`; no ref moves."""
    return make_tree_commit(repo, message, tree_with(repo, None, files), parent)


def tree_with(repo: pygit2.Repository, base: str | None, files: dict[str, bytes]) -> str:
    """The tree `base` (None: an empty one) with `files` (paths, / between directories) put in."""
    import pygit2

    leaves: dict[str, bytes] = {}
    inner: dict[str, dict[str, bytes]] = {}
    for path, data in files.items():
        head, sep, rest = path.partition("/")
        if sep:
            inner.setdefault(head, {})[rest] = data
        else:
            leaves[head] = data
    tree = repo[base] if base else None
    builder = repo.TreeBuilder(tree) if isinstance(tree, pygit2.Tree) else repo.TreeBuilder()
    for name, data in leaves.items():
        builder.insert(name, repo.create_blob(data), pygit2.GIT_FILEMODE_BLOB)
    for name, sub in inner.items():
        had = str(tree[name].id) if isinstance(tree, pygit2.Tree) and name in tree else None
        builder.insert(name, pygit2.Oid(hex=tree_with(repo, had, sub)), pygit2.GIT_FILEMODE_TREE)
    return str(builder.write())


def make_tree_commit(repo: pygit2.Repository, message: str, tree: str, parent: str | None) -> str:
    import pygit2

    return _commit(repo, message, pygit2.Oid(hex=tree), parent)


def _commit(repo: pygit2.Repository, message: str, tree: pygit2.Oid, parent: str | None) -> str:
    import pygit2

    who = pygit2.Signature("git-fleet", "fleet@git-fleet.invalid", int(time.time()), 0)
    parents = [pygit2.Oid(hex=parent)] if parent else []
    return str(repo.create_commit(None, who, who, message, tree, parents))


def commit(repo: pygit2.Repository, oid: str) -> pygit2.Commit:
    import pygit2

    found = repo[oid]
    if not isinstance(found, pygit2.Commit):
        raise FleetError(f"{oid} is not a commit")
    return found


def tree(repo: pygit2.Repository, oid: str) -> pygit2.Tree:
    import pygit2

    found = repo[oid]
    if not isinstance(found, pygit2.Tree):
        raise FleetError(f"{oid} is not a tree")
    return found


def blob(repo: pygit2.Repository, oid: str) -> bytes:
    import pygit2

    found = repo[oid]
    if not isinstance(found, pygit2.Blob):
        raise FleetError(f"{oid} is not a file")
    return bytes(found.data)
