"""A bug, said in one line and kept whole in a log: the full traceback goes to a file under the
repository's git directory (fleet/crashes/), or under $XDG_STATE_HOME/git-fleet/ (default
~/.local/state/git-fleet/) outside a repository or where that cannot be written, and the line
says where. Light: the commit hook's entry point uses it too."""

from __future__ import annotations

import os
import sys
import time
from contextlib import suppress
from typing import TYPE_CHECKING

from . import durable

if TYPE_CHECKING:
    from pathlib import Path

KEEP = 20  # logs kept per place: the newest


def report(command: str, error: BaseException) -> list[str]:
    """The error: and hint: lines for an unexpected `error` in `command` (as the person typed it),
    after writing its traceback to a log."""
    try:
        where = _write(command, error)
    except Exception:  # noqa: BLE001 (the report of a bug must not become a second one: the line still goes out)
        where = None
    said = f"the traceback is in {where}" if where else "its traceback could not be written anywhere"
    return [f"error: {command} failed unexpectedly: {type(error).__name__}: {error}",
            f"hint: {said}; please report it with the command that triggered it"]


def _write(command: str, error: BaseException) -> Path | None:
    # here, not above: the hook imports this module on every commit
    import traceback

    from . import __version__  # (likewise)

    try:
        cwd = os.getcwd()
    except OSError as e:  # (deleted under the command: said in the log instead)
        cwd = f"(cannot be read: {e.strerror})"
    text = (f"git-fleet {__version__}: {command}\nargs: {sys.argv[1:]!r}\ncwd: {cwd}\n"
            f"python: {sys.version.split()[0]} ({sys.executable})\ntime: {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n\n"
            + "".join(traceback.format_exception(error)))
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for directory in _places():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / name
            if not durable.create(path, text.encode("utf-8", "backslashreplace")):
                continue  # (a name of this second and process: taken only by a log of this very crash)
        except OSError:
            continue  # this place cannot be written (a read-only repository): the next one
        _trim(directory)
        return path
    return None


def _places() -> list[Path]:
    from pathlib import Path  # (likewise)

    places = []
    try:
        from .gateway import plumbing  # (likewise: git, to find the repository the way it does)

        common = plumbing.out(["rev-parse", "--path-format=absolute", "--git-common-dir"], check=False)
        if common:
            places.append(Path(common) / "fleet" / "crashes")
    except Exception:  # noqa: BLE001, S110 (a bug report must not fail on the way: git itself may be what broke)
        pass
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    places.append(Path(state) / "git-fleet")
    return places


def _trim(directory: Path) -> None:
    logs = sorted(directory.glob("crash-*.log"))
    for old in logs[:-KEEP]:
        with suppress(OSError):  # another command trimmed it first, or it cannot go: one log too many
            old.unlink()
