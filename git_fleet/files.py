"""Writing files so that no reader ever sees half of one (the Maildir rules); reading the one a
command is given."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UsageError


@contextmanager
def _complete(path: Path, text: str) -> Iterator[str]:
    """A temporary file beside `path` holding `text`, written and fsynced; removed afterwards
    unless the caller renamed it away."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` at once, keeping its permissions (0644 for a new file)."""
    with _complete(path, text) as tmp:
        try:
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        except FileNotFoundError:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)


def write_new(path: Path, text: str) -> bool:
    """Create `path` holding `text`, complete, only if nothing is there yet: an exclusive create
    (link() fails on an existing name, where rename() would overwrite). False if it exists."""
    with _complete(path, text) as tmp:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True


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
        (made / ".gitignore").write_text(ignore, encoding="utf-8")
        os.rename(made, path)  # fails if path is there (and not empty) or on another file system
        return
    except OSError:
        shutil.rmtree(made, ignore_errors=True)
    path.mkdir(exist_ok=True)
    write_atomic(path / ".gitignore", ignore)


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
