"""Starting the publisher (publish.py) in the background, detached, from where nothing may wait
on the network: the post-commit hook (an agent's commit) and the agent CLIs' hooks (a change of
an agent's state, for the other machines). It imports the standard library and agent_state
alone: it is on every agent commit's and every hook event's path."""

from __future__ import annotations

import os
import sys

from . import agent_state

WANTED = os.path.join("fleet", "remote", "publish.wanted")  # in the common dir: a round is wanted
# in the common dir of a clone whose fleet spans machines (written by git fleet-init --remote and
# git fleet-join): the Python that has git-fleet installed (the agent hooks run another, bare)
PYTHON = os.path.join("fleet", "remote", "python")


def record(common_dir: str) -> None:
    """This clone's fleet spans machines: the publisher is started with this Python."""
    path = os.path.join(common_dir, PYTHON)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(sys.executable)


def wanted(common_dir: str) -> str:
    """The mark of a round wanted: in the clone's common dir, or a sandboxed agent's own directory
    (the one place there it may write: machines.place)."""
    own = agent_state.confined()
    return os.path.join(own, "remote", "publish.wanted") if own else os.path.join(common_dir, WANTED)


def want(common_dir: str) -> None:
    """Mark a round wanted (a publisher running goes round again for it)."""
    path = wanted(common_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    os.utime(path)


def spans(common_dir: str) -> bool:
    """Whether this clone's fleet spans machines (one stat)."""
    return os.path.isfile(os.path.join(common_dir, PYTHON))


def start(common_dir: str | None = None) -> None:
    """Start the publisher: for the commit just made (None: it finds out whose it is, with this
    Python), or for a round `common_dir`'s clone wants now (an agent's state changed: its hold's
    next beat tells the other machines). OSError if it cannot start."""
    python = sys.executable
    if common_dir is not None:
        with open(os.path.join(common_dir, PYTHON), encoding="utf-8") as f:
            python = f.read().strip()
        want(common_dir)
    null = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    os.posix_spawn(python, [python, "-m", "git_fleet.publish", common_dir or "--hook"], dict(os.environ),
                   file_actions=null, setsid=True)
