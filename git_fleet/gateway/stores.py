"""An agent's own object store (a sandboxed agent writes its objects there, reading the
repository's as an alternate): every object in it checked and brought into the repository's.

The repository's store never takes the agent's store as an alternate: there an object is found
by its file name, which the agent chooses, so a file named after an object that is yet to be
written (another agent's next blob, a merge's tree) would stand in for it. Brought in through
index-pack instead, each object is named by the hash of what it holds and checked to be well
formed (fsck); the copies in the agent's store are then dropped, as `git prune-packed` drops
what a pack holds, so the next look finds nothing new in a directory listing."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from ..errors import GitError
from .plumbing import git, git_env

_FANOUT = re.compile(r"[0-9a-f]{2}")


def has_objects(store: Path) -> bool:
    """Whether `store` holds any object: a loose one, or a pack (a directory listing or two)."""
    try:
        with os.scandir(store) as entries:
            for entry in entries:
                if _FANOUT.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False) and os.listdir(entry.path):
                    return True
                if entry.name == "pack" and any(n.endswith(".pack") for n in os.listdir(entry.path)):
                    return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    return False


def bring_in(common_dir: Path, store: Path) -> list[str]:
    """Bring every object of `store` into the repository at `common_dir`, each checked, and drop
    the copies. Returns the names of the loose files whose content is not the object they are
    named after (forged, or damaged): never brought in under that name, and dropped too.
    GitError naming the store when an object is malformed (nothing is brought in then)."""
    if not has_objects(store):
        return []
    packs = [p for p in (store / "pack").glob("pack-*.pack")]  # (before the listing: each is brought in whole)
    own = {**os.environ, "GIT_DIR": str(common_dir), "GIT_OBJECT_DIRECTORY": str(store),
           "GIT_ALTERNATE_OBJECT_DIRECTORIES": ""}
    names = git(["cat-file", "--batch-all-objects", "--batch-check=%(objectname)"], common_dir, env=own).stdout
    if not names.strip():
        return []
    repo = {k: v for k, v in os.environ.items() if k not in ("GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES")}
    repo["GIT_DIR"] = str(common_dir)
    pack = subprocess.Popen(["git", "pack-objects", "--stdout", "-q"], cwd=common_dir, env=git_env(own),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    index = subprocess.Popen(["git", "index-pack", "--stdin", "--fsck-objects"], cwd=common_dir,
                             env=git_env(repo), stdin=pack.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert pack.stdin is not None and pack.stdout is not None and pack.stderr is not None and index.stderr is not None
    pack.stdout.close()  # (index-pack holds it; pack-objects sees a closed pipe if index-pack dies)
    try:
        pack.stdin.write(names)
        pack.stdin.close()
    except BrokenPipeError:
        pass  # (pack-objects died: its stderr says why)
    packed_err = pack.stderr.read()
    index_err = index.stderr.read()
    if pack.wait() != 0 or index.wait() != 0:
        said = (packed_err or index_err).decode("utf-8", "replace").strip().replace("fatal: ", "").replace("error: ", "")
        first = said.splitlines()[0] if said else "git failed"
        raise GitError(f"{store}: its objects cannot be brought into the repository: {first}")
    for p in packs:
        for part in (p, p.with_suffix(".idx"), p.with_suffix(".rev")):
            part.unlink(missing_ok=True)
    git(["prune-packed"], common_dir, env={**own, "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(common_dir / "objects")})
    looked = git(["cat-file", "--batch-check=%(objectname)"], common_dir, env=repo, input=names).stdout.decode()
    forged = [line.split()[0] for line in looked.splitlines() if line.endswith(" missing")]
    for name in forged:
        (store / name[:2] / name[2:]).unlink(missing_ok=True)
    return forged
