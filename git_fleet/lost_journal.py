"""A move's journal that cannot be read (a full disk, a hand edit): nothing is guessed. The
commands that move branches (merge, sync, checkpoint) refuse, saying where the journal is and how
the base and the work trees stand; the others warn once and work (moves.recover_held); once the
person has put right what was half done, git fleet-doctor --discard-journal sets it aside."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import FleetError
from .gateway.repo import Repo
from .moves import MARK, clear_index_locks, pending, read_journal


def unreadable(repo: Repo) -> tuple[Path, str] | None:
    """The journal of an interrupted move, and why it cannot be read, where it cannot be."""
    path = pending(repo)
    if path is None:
        return None
    move = read_journal(path)
    return (path, move) if isinstance(move, str) else None


def refuse_unreadable(repo: Repo, base: str) -> None:
    """Refuse to move a branch while the journal of an interrupted move cannot be read: what it
    moved, and whether its work tree followed, is unknown, so nothing is guessed. Says where the
    journal is, what the base and the work trees look like, and how to be done with it."""
    found = unreadable(repo)
    if found is None:
        return
    lines = [f"{headline(*found)}; nothing was changed"] + [f"  {line}" for line in move_state(repo, base)]
    raise FleetError("\n".join(lines), hint(base).replace(", then:", ",\nthen:"))


def headline(path: Path, why: str) -> str:
    return f"the journal of an interrupted checkpoint merge or sync, {path}, cannot be read ({why})"


def hint(base: str) -> str:
    return (f"check {base} (git reflog -3 {base}) and the work trees named (git status), finish by hand what is half "
            "done, then: git fleet-doctor --discard-journal")


def move_state(repo: Repo, base: str) -> list[str]:
    """What the base and the work trees say about a move whose journal is lost: the base's last
    move, the work trees whose index a move of ours holds locked, and where the base is checked
    out, whether its index still matches it."""
    said = []
    for new, message, when in repo.last_moves(f"refs/heads/{base}", 1):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
        said.append(f"{base} is at {new[:12]}, last moved by '{message}' at {stamp}")
    for tree in repo.worktrees():
        if tree.bare or tree.prunable:
            continue
        try:
            held = repo.index_lock_file(tree.path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            held = ""  # no lock there: no move of ours is stopped half way in this work tree
        if held.startswith(MARK):
            said.append(f"{tree.path}: its index is locked by an interrupted {held.removeprefix(MARK).strip()}")
    where = repo.checked_out(base)
    if where is not None:
        staged = [path for code, path in repo.status(where) if code[0] not in " ?!"]
        said.append(f"{where} has {base} checked out; " + (f"{len(staged)} staged path(s) differ from it (did it follow?)"
                                                           if staged else "its index matches it"))
    return said


def discard(repo: Repo) -> Path:
    """Set aside the journal of an interrupted move that cannot be read, once the person has put
    right by hand what it left; refuses one that can be read (any command finishes that)."""
    found = unreadable(repo)
    if found is None:
        if pending(repo) is not None:
            raise FleetError("the journal of the interrupted move can be read, so it is finished, not discarded",
                             "run any git fleet command in the main worktree, e.g. git fleet-status")
        raise FleetError("there is no journal of an interrupted move to discard")
    path, _ = found
    aside = path.with_name(f"{path.name}.discarded-{int(time.time())}")
    os.replace(path, aside)
    clear_index_locks(repo)
    return aside
