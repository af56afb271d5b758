"""Many objects through one git process: files hashed into blobs (`git hash-object --stdin-paths`)
and blobs read back in chunks (`git cat-file --batch`); for snapshots and work trees that follow
a branch, never on the commit hook's path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence

from ..errors import GitError
from .plumbing import INHERITED, git, git_env


def hash_files(paths: Sequence[bytes], cwd: str | os.PathLike[str], *, filters: bool = True,
               write: bool = False, env: dict[str, str] | None = None) -> list[str]:
    """The blob id of each file (paths relative to `cwd`), through git's clean conversion for its
    path or as its bytes are; in one `git hash-object --stdin-paths`. A line there that starts
    with a quote is C-unquoted, so every path goes as ./PATH; a name with a newline cannot go on
    a line at all and is hashed on its own."""
    args = ["hash-object", *(["-w"] if write else []), *([] if filters else ["--no-filters"])]
    listed = [p for p in paths if b"\n" not in p]
    found: dict[bytes, str] = {}
    if listed:
        raw = git([*args, "--stdin-paths"], cwd, input=b"".join(b"./" + p + b"\n" for p in listed), env=env).stdout
        found.update(zip(listed, raw.decode().split(), strict=True))
    for p in paths:
        if p not in found:
            name = os.fsdecode(p)
            found[p] = git([*args, *([f"--path={name}"] if filters else []), "--", name], cwd,
                           env=env).stdout.decode().strip()
    return [found[p] for p in paths]


def blobs(oids: Sequence[str], cwd: str | os.PathLike[str]) -> Iterator[tuple[str, Iterator[bytes]]]:
    """The content of each blob, in order, from one `git cat-file --batch`, as chunks: a large
    file is never held in memory whole. Each blob's chunks must be read before the next blob."""
    proc = subprocess.Popen(["git", "cat-file", "--batch"], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=git_env(), pass_fds=tuple(INHERITED))
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None and stdout is not None

    def chunks(size: int) -> Iterator[bytes]:
        left = size
        while left:
            chunk = stdout.read(min(left, 1 << 20))
            if not chunk:
                raise GitError("'git cat-file --batch' ended early")
            left -= len(chunk)
            yield chunk
        stdout.read(1)  # the newline after each object

    try:
        for oid in oids:
            stdin.write(oid.encode() + b"\n")
            stdin.flush()
            header = stdout.readline().decode().split()
            if len(header) != 3 or header[0] != oid or header[1] != "blob":
                raise GitError(f"{oid[:12]} is not a blob of this repository")
            yield oid, chunks(int(header[2]))
    finally:
        stdin.close()
        stdout.close()
        proc.wait()
