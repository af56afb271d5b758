"""Files that are not a durable write (those are durable.py's): a directory git ignores all of,
and the file a command is given to read."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import durable
from .errors import UsageError


def ignored_dir(path: Path, note: str, staging: Path) -> None:
    """Make `path` a directory git ignores all of (a .gitignore of `*` inside), never seen by git
    half made: a kill between mkdir and the .gitignore would leave it untracked, and a worktree
    with untracked files is one with work in it. So it is put together in `staging` (where git
    does not look, on the same file system) and renamed into place; failing that, made in place."""
    ignore = f"# {note}\n*\n"
    if path.is_dir() and (path / ".gitignore").is_file():
        return
    made = Path(tempfile.mkdtemp(prefix="dir-", dir=staging))
    try:
        durable.replace(made / ".gitignore", ignore)
        os.rename(made, path)  # fails if path is there (and not empty) or on another file system
        return
    except OSError:
        shutil.rmtree(made, ignore_errors=True)
    path.mkdir(exist_ok=True)
    durable.replace(path / ".gitignore", ignore)


def read_input(name: str | None) -> str:
    """The text of the file a command is given (a task's body, its result): standard input for -,
    "" for none; a usage error where it cannot be read."""
    if name is None:
        return ""
    if name == "-":
        return sys.stdin.read()
    try:
        with open(name, encoding="utf-8") as fh:
            return fh.read()
    except OSError as e:
        raise UsageError(f"cannot read {name}: {e.strerror}") from None
