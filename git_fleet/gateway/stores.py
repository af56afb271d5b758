"""An agent's own object store (a sandboxed agent writes its objects there, reading the
repository's as an alternate): every object in it checked and brought into the repository's.

The repository's store never takes the agent's store as an alternate: there an object is found
by its file name, which the agent chooses, so a file named after an object that is yet to be
written (another agent's next blob, a merge's tree) would stand in for it. Brought in through
index-pack instead, each object is named by the hash of what it holds and checked to be well
formed (fsck). The store is the agent's to fill with anything, links too: it is read without
following a link (a fan-out directory or a pack that is a link is skipped, its `info/alternates`
removed first), and the copies brought in are removed through the directories found, never by
a path that could lead elsewhere (git's prune-packed would follow a linked fan-out directory)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ..errors import GitError
from .plumbing import git, git_env

_FANOUT = re.compile(r"[0-9a-f]{2}")
_LOOSE = re.compile(r"[0-9a-f]{38}([0-9a-f]{24})?")
_PACK = re.compile(r"pack-[0-9a-f]{40}([0-9a-f]{24})?\.idx")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def _opened(name: str, dir_fd: int | None = None) -> Iterator[int | None]:
    """A real directory opened (None where it is missing, a link or anything else)."""
    try:
        fd = os.open(name, _DIR, dir_fd=dir_fd)
    except OSError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _regular(name: str, dir_fd: int) -> bool:
    with suppress(OSError):
        return stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    return False


def _loose(top: int) -> dict[str, list[str]]:
    """The loose objects of the store open as `top`: fan-out directory -> names, each a regular
    file in a real directory."""
    found: dict[str, list[str]] = {}
    for fan in os.listdir(top):
        if _FANOUT.fullmatch(fan):
            with _opened(fan, top) as fd:
                if fd is not None:
                    names = [n for n in os.listdir(fd) if _LOOSE.fullmatch(n) and _regular(n, fd)]
                    if names:
                        found[fan] = names
    return found


def _packs(top: int, common_dir: Path) -> dict[str, list[str]]:
    """The store's packs (each index a regular file in a real pack directory) -> the objects each holds."""
    found: dict[str, list[str]] = {}
    with _opened("pack", top) as fd:
        if fd is None:
            return found
        for idx in os.listdir(fd):
            if _PACK.fullmatch(idx) and _regular(idx, fd):
                raw = os.open(idx, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                with os.fdopen(raw, "rb") as fh:
                    listing = git(["show-index"], common_dir, input=fh.read(), check=False)
                found[idx] = [line.split()[1] for line in listing.stdout.decode().splitlines() if len(line.split()) > 1]
    return found


def bring_in(common_dir: Path, store: Path) -> list[str]:
    """Bring every object of `store` into the repository at `common_dir`, each checked, and drop
    the copies. Returns the names of the loose files whose content is not the object they are
    named after (forged, or damaged): never brought in under that name, and dropped too.
    GitError naming the store when an object is malformed (nothing is brought in then)."""
    with _opened(str(store)) as top:
        if top is None:
            return []
        with suppress(OSError):
            os.unlink("info/alternates", dir_fd=top)  # (git would read it: objects of anywhere)
        loose, packs = _loose(top), _packs(top, common_dir)
        names = [fan + n for fan, ns in loose.items() for n in ns] + [o for objs in packs.values() for o in objs]
        if not names:
            return []
        _index(common_dir, store, "\n".join(names).encode() + b"\n")
        looked = git(["cat-file", "--batch-check=%(objectname)"], common_dir, input="\n".join(names).encode() + b"\n",
                     env=_repository_env(common_dir)).stdout.decode()
        forged = {line.split()[0] for line in looked.splitlines() if line.endswith(" missing")}
        for fan, ns in loose.items():  # (each through its directory as found: a link put there since is not followed)
            with _opened(fan, top) as fd:
                for n in ns if fd is not None else []:
                    with suppress(OSError):
                        os.unlink(n, dir_fd=fd)
            with suppress(OSError):
                os.rmdir(fan, dir_fd=top)  # (when empty: the next look lists fewer directories)
        with _opened("pack", top) as fd:
            for idx in packs if fd is not None else []:
                for part in (idx, idx[:-4] + ".pack", idx[:-4] + ".rev"):
                    with suppress(OSError):
                        os.unlink(part, dir_fd=fd)
    return sorted(forged)


def _repository_env(common_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES")}
    env["GIT_DIR"] = str(common_dir)
    return env


def _index(common_dir: Path, store: Path, names: bytes) -> None:
    """The objects named, read from `store` (and nowhere else), packed and indexed into the
    repository's store: each hashed from what it holds, and checked."""
    own = {**os.environ, "GIT_DIR": str(common_dir), "GIT_OBJECT_DIRECTORY": str(store),
           "GIT_ALTERNATE_OBJECT_DIRECTORIES": ""}
    pack = subprocess.Popen(["git", "pack-objects", "--stdout", "-q"], cwd=common_dir, env=git_env(own),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    index = subprocess.Popen(["git", "index-pack", "--stdin", "--fsck-objects"], cwd=common_dir,
                             env=git_env(_repository_env(common_dir)), stdin=pack.stdout, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    assert pack.stdin is not None and pack.stdout is not None and pack.stderr is not None and index.stderr is not None
    pack.stdout.close()  # (index-pack holds it; pack-objects sees a closed pipe if index-pack dies)
    try:
        pack.stdin.write(names)
        pack.stdin.close()
    except BrokenPipeError:
        pass  # (pack-objects died: its stderr says why)
    packed_err, index_err = pack.stderr.read(), index.stderr.read()
    if pack.wait() != 0 or index.wait() != 0:
        said = (packed_err or index_err).decode("utf-8", "replace").strip().replace("fatal: ", "").replace("error: ", "")
        first = said.splitlines()[0] if said else "git failed"
        raise GitError(f"{store}: its objects cannot be brought into the repository: {first}")
