"""Moving a branch, and the work tree that has it checked out, so that a process killed at any
moment, git itself included, leaves the old state or the new one: a checkpoint merge moves the
base (and makes its tag), git fleet-sync moves an agent's branch. Holding the fleet's lock:

1. The work tree's index is locked, by us (index.lock, holding a line that says it is ours): no
   git command changes it meanwhile, and one that holds it already stops the move before
   anything changed. (A file edited by hand can still get in the way: see 4.)
2. A journal (<common dir>/fleet/move-journal, fsynced) says what is about to happen.
3. The refs move in one transaction, each checked against its old value. git runs it from a git
   dir of ours whose HEAD points nowhere (ref_context), so that it takes no HEAD.lock: a lock it
   could leave behind empty, which nobody could tell from a live command's.
4. The work tree follows, as `git merge` would move it, keeping local changes (repo.follow): into
   a copy of the index, which then replaces the index. If a change in the way no longer lets it
   follow, the files it wrote go back and the refs go back too.
5. The checkpoint log gets its line; the journal goes; the index lock is let go.

The git processes of a command hold the fleet's lock with it (lock.py), so recovery, which needs
the lock, never works beside a move's git; a move's own command finishes or undoes it when git
fails under it. Otherwise the next fleet command in the main worktree that gets the lock looks at
the refs: still old, nothing happened; new, the rest is done (files a killed read-tree already
wrote count as written); moved past, it says what later commits undid; and it removes the lock
files this move left, by their content, and no others. Until then the commit hook refuses
commits on the moving branch: made from the old tree, they would undo the move.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from . import durable, lock, runner
from .errors import FleetError, GitError
from .gateway import scratch
from .gateway.plumbing import ZERO_OID
from .gateway.repo import Repo
from .gateway.worktree_moves import IndexLocked, remove_dead_lock
from .pause import pause

JOURNAL = "move-journal"
MARK = "git-fleet: "  # the start of what our index.lock holds
OLD_JOURNAL = "merge-journal"  # (what an earlier git-fleet called it, for checkpoint merges only)
LOG = "checkpoints.log"


@dataclass(frozen=True)
class Move:
    """What is about to happen: `ref` from `old` to `new`, with `also` (refs to create with it, a
    checkpoint's tag), and a line for the checkpoint log once it is done."""

    ref: str
    old: str
    new: str
    what: str = "merge"  # "merge" or "sync", for what is said about it
    also: tuple[tuple[str, str], ...] = ()
    log: str = ""
    time: float = field(default_factory=time.time)

    @property
    def branch(self) -> str:
        return self.ref.removeprefix("refs/heads/")

    @property
    def marker(self) -> str:
        """What our index.lock holds (after MARK), so that recovery knows it for ours."""
        return f"{self.what} of {self.branch} to {self.new}"

    def as_json(self) -> str:
        return json.dumps({**self.__dict__, "also": [list(a) for a in self.also]})

    @classmethod
    def from_json(cls, text: str) -> Move:
        """The move a journal holds; ValueError for anything else (JSON that is not a move)."""
        data = json.loads(text)
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("ref", "old", "new")) \
                or not isinstance(data.get("also", []), list) or not isinstance(data.get("log", ""), str):
            raise ValueError("not the record of a move")
        also = [tuple(a) for a in data.get("also", [])]
        if data.get("tag_ref") and data.get("tag"):  # an earlier git-fleet's merge journal
            also.append((data["tag_ref"], data["tag"]))
        return cls(data["ref"], data["old"], data["new"], data.get("what", "merge"),
                   tuple((str(r), str(v)) for r, v in also), data.get("log", ""), float(data.get("time", 0)))


def journal(repo: Repo) -> Path:
    return repo.common_dir / "fleet" / JOURNAL


def pending(repo: Repo) -> Path | None:
    """The journal of a move not finished, if there is one."""
    for name in (JOURNAL, OLD_JOURNAL):
        path = repo.common_dir / "fleet" / name
        if path.exists():
            return path
    return None


# -- carrying one out --------------------------------------------------------------------------------

class Settled(FleetError):
    """A move ended in a state that works (nothing changed, or put back), with a message: its
    journal can go."""


def gone_worktree(branch: str, path: Path, then: str) -> FleetError:
    """The branch is checked out in a worktree git knows whose directory is not there."""
    return FleetError(f"{branch} is checked out in {path}, a worktree whose directory is gone (moved by hand?); "
                      "nothing was changed",
                      f"git worktree repair <its new place> (or, if it is gone for good, git worktree prune), then {then}")


def _may_move(repo: Repo, move: Move) -> None:
    """Refuse while another move is unfinished, or the branch's worktree is gone."""
    if pending(repo) is not None:
        raise FleetError("a move of a branch is not finished, so nothing more is moved; nothing was changed",
                         "run any git fleet command in the main worktree to finish it, then this one again")
    gone = repo.worktree_with(move.branch, prunable=True)
    if gone is not None and gone.prunable:
        raise gone_worktree(move.branch, gone.path, "run it again")


def precheck(repo: Repo, move: Move) -> None:
    """What would stop carry_out, looked at before anything else happens (a merge across
    machines publishes the base first): raises as carry_out would, nothing changed."""
    _may_move(repo, move)
    if repo.ref_value(move.ref) != move.old:
        raise FleetError(f"{move.branch} moved while this was being prepared; nothing was changed", "run it again")
    where = repo.checked_out(move.branch)
    if where is not None:
        if repo.index_lock_file(where).exists():
            raise FleetError(f"{repo.index_lock_file(where)} exists: another git process is using the index of {where}; "
                             "nothing was changed", "if no git process is running there, remove it, then run it again")
        why = repo.can_follow(where, move.old, move.new)
        if why:
            raise FleetError(f"{where}: local changes would be overwritten by the {move.what}: {why}\n"
                             "nothing was changed", "commit or stash them, then run it again")


def carry_out(repo: Repo, move: Move, message: str, check: bool = True) -> list[str]:
    """Move `move.ref` and the work tree that has it checked out (see the module's docstring),
    holding the fleet's lock; returns warnings. Raises FleetError, with nothing changed, when it
    cannot; `check`: first make sure the work tree can follow (local changes in the way). A stop
    signal that arrived meanwhile is acted on once the move is done (runner.Stopped)."""
    _may_move(repo, move)
    where = repo.checked_out(move.branch)
    # the journal first and last: whatever of ours a kill leaves (our index lock included) is
    # found through it
    durable.replace(journal(repo), move.as_json())
    try:
        with repo.index_lock(where, MARK + move.marker) if where is not None else nullcontext():
            if repo.ref_value(move.ref) != move.old:
                raise Settled(f"{move.branch} moved while this was being prepared; nothing was changed", "run it again")
            if where is not None and check:
                why = repo.can_follow(where, move.old, move.new)
                if why:
                    raise Settled(f"{where}: local changes would be overwritten by the {move.what}: {why}\n"
                                  "nothing was changed", "commit or stash them, then run it again")
            # from here a stop signal waits until the branch is old or new again, and the git of the
            # move holds the fleet's lock with this command
            with runner.deferred() as arrived, lock.lent_to_git(repo.common_dir):
                pause("after-journal")
                try:
                    repo.update_refs([(move.ref, move.new, move.old)], message, away_from_head=True)
                except GitError as e:
                    _after_failed_update(repo, move, e)  # raises Settled unless the branch did move
                pause("after-ref")
                warnings = _finish(repo, move, where, recovering=False)
                pause("after-follow")
    except (Settled, IndexLocked):
        journal(repo).unlink(missing_ok=True)
        raise
    # (any other failure leaves the journal, for recovery)
    journal(repo).unlink(missing_ok=True)
    if arrived:
        raise runner.Stopped(f"stopped by {' and '.join(dict.fromkeys(arrived))} once {move.branch} had moved: the "
                             f"{move.what} is done, nothing after it was", None, warnings=warnings)
    return warnings


def _after_failed_update(repo: Repo, move: Move, err: GitError) -> None:
    """The ref transaction failed. git may have been killed inside it, so look at what it did: if
    the branch moved, the move goes on; if not, nothing changed, and the error says why (a stale
    lock is named, never removed blindly)."""
    if repo.ref_value(move.ref) == move.new:
        return
    others = _clear_locks(repo, move)
    if others:
        raise Settled(f"cannot move {move.branch}; nothing was changed:\n" + "\n".join(others),
                      "if no git process is running in this repository, remove the lock file(s), then run it again")
    if repo.ref_value(move.ref) != move.old:
        raise Settled(f"{move.branch} moved while this was being prepared; nothing was changed", "run it again")
    raise Settled(f"cannot move {move.branch}: {err.message}\nnothing was changed")


def _undo_also(repo: Repo, move: Move) -> None:
    for ref, value in move.also:
        if repo.ref_value(ref) == value:
            repo.update_refs([(ref, ZERO_OID, value)], f"git-fleet: undo a half-made {move.what}")


def _make_also(repo: Repo, move: Move) -> list[str]:
    """Make what goes with the move (a tag) where it is not there yet; returns warnings."""
    warnings = []
    for ref, value in move.also:
        if repo.ref_value(ref) != value:
            try:
                repo.update_refs([(ref, value, ZERO_OID)], f"git-fleet: {move.what}", away_from_head=True)
            except GitError as e:
                warnings.append(f"could not make {ref.removeprefix('refs/tags/')}: {e.message}")
    return warnings


def _finish(repo: Repo, move: Move, where: Path | None, recovering: bool) -> list[str]:
    """The branch is at move.new: bring the work tree along (or put everything back, if it cannot
    follow: Settled), then make what goes with it (a tag: only now, so that putting the branch back
    never deletes a ref, which would take packed-refs.lock), and log. The caller holds the work
    tree's index lock, and drops the journal once it has let the lock go."""
    warnings = _clear_locks(repo, move)
    if where is not None:
        why = repo.follow(where, move.old, move.new, killed_since=move.time if recovering else None)
        if why:
            _roll_back(repo, move, where, why)
    warnings += _make_also(repo, move)
    if move.log:
        log = repo.common_dir / "fleet" / LOG
        existing = log.read_text(encoding="utf-8") if log.exists() else ""
        if move.log not in existing:
            durable.append_line(log, move.log)
    return warnings


def _roll_back(repo: Repo, move: Move, where: Path, why: str) -> None:
    """Put the branch back, checked against where the move put it; the work tree is as it was
    (repo.follow put back what it wrote). Raises Settled, saying so; FleetError, keeping the
    journal for the next command, when git cannot move it back now (a lock)."""
    try:
        repo.update_refs([(move.ref, move.old, move.new)], f"git-fleet: undo a {move.what} its work tree could not "
                         "follow", away_from_head=True)
    except GitError as e:
        if repo.ref_value(move.ref) == move.new:
            raise FleetError(f"{where} cannot follow the {move.what} ({why}), and {move.branch} cannot be put back "
                             f"yet: {e.message}", "the next git fleet command in the main worktree tries again") from None
        raise Settled(f"{move.branch} moved to {move.new[:12]}, but {where} could not follow it ({why}), and "
                      f"{move.branch} has moved on since, so it cannot be put back",
                      f"look at `git -C {where} status`; `git -C {where} read-tree -m -u {move.old[:12]} "
                      f"{move.new[:12]}` brings the work tree along once what is in the way is set aside") from None
    raise Settled(f"{where} cannot follow the {move.what} ({why}); {move.branch} was put back to {move.old[:12]}: "
                  "nothing was changed", "set aside what is in the way (commit or stash local changes), then run it again")


def _clear_locks(repo: Repo, move: Move) -> list[str]:
    """Remove the ref lock files a killed git of this move left, and only those: a ref's lock holds
    the value git was about to write (or nothing yet: see repo.remove_dead_lock), so ours hold
    the branch's new value (or its old one: putting it back), or what goes with it. Any other
    lock is reported, not removed."""
    ours = {move.ref: {move.new, move.old}, **{ref: {value} for ref, value in move.also}}
    return [f"  {repo.common_dir / f'{ref}.lock'} exists: another git process holds it, or one was killed"
            for ref, values in ours.items() if remove_dead_lock(repo.common_dir / f"{ref}.lock", values, move.time) is False]


def clear_index_locks(repo: Repo) -> None:
    """Index locks a killed move of ours left, in any work tree: they hold our mark. (Recovery
    holds the fleet's lock, so no move is running, and a git that a killed one started would
    hold the lock with it.)"""
    for tree in repo.worktrees():
        if tree.bare or tree.prunable:
            continue
        index_lock = repo.index_lock_file(tree.path)
        try:
            if index_lock.read_text(encoding="utf-8", errors="replace").startswith(MARK):
                index_lock.unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass  # no lock there (or no worktree): nothing of ours to remove


# -- recovery ----------------------------------------------------------------------------------------

def recover(repo: Repo, orchestrator: bool) -> list[str]:
    """Before a command does anything else: finish (or undo) a move whose process was killed, and
    remove what killed commands left (scratch space, our index locks). Only when the fleet's lock
    is free: whoever holds it, or a git it started, may be moving right now. A move is finished
    only from the main worktree; elsewhere it is only said that one needs finishing. Never
    fails: every outcome is a state that works."""
    path = pending(repo)
    top = scratch.root(repo.common_dir)
    leftovers = top.is_dir() and any(top.iterdir())
    if path is None and not leftovers:
        return []
    with lock.attempt(repo.common_dir) as free:
        if not free:
            return [f"a {_what(read_journal(path))} is in progress ({lock.holder(repo.common_dir) or 'another command'})"] \
                if path is not None else []
        if leftovers:
            repo.clean_scratch()
            if path is None:
                clear_index_locks(repo)  # (a move killed after its journal went, before its lock did)
        if path is None:
            return []
        if not orchestrator:
            move = read_journal(path)
            if isinstance(move, str):
                return [f"the journal of an interrupted move, {path}, cannot be read; merges and syncs wait until it is "
                        f"dealt with (git fleet-doctor in the main worktree, {repo.main_worktree})"]
            return [f"a {_what(move)} was interrupted; the next git fleet command in the main worktree "
                    f"({repo.main_worktree}) finishes it"]
        return recover_held(repo)


def read_journal(path: Path) -> Move | str:
    """The move a journal records, or why it cannot be read (it is never guessed at)."""
    try:
        return Move.from_json(path.read_text(encoding="utf-8"))
    except OSError as e:
        return e.strerror or str(e)
    except (ValueError, KeyError, TypeError) as e:
        return f"{type(e).__name__}: {e}"


def _what(move: Move | str) -> str:
    if isinstance(move, str):
        return "move of a branch"
    return f"{'checkpoint merge into' if move.what == 'merge' else 'sync of'} {move.branch}"


def recover_held(repo: Repo) -> list[str]:
    """recover, for a command that holds the fleet's lock already (in the main worktree)."""
    path = pending(repo)
    if path is None:
        return []
    move = read_journal(path)
    if isinstance(move, str):
        # never guessed at: the journal stays, moves are refused (lost_journal), the rest works
        return [f"the journal of an interrupted move, {path}, cannot be read ({move}); nothing moves a branch "
                "until it is dealt with (see git fleet-doctor)"]
    if path.name != JOURNAL:
        os.replace(path, journal(repo))
    clear_index_locks(repo)
    try:
        said = _recover(repo, move)
    except Settled as e:
        said = [e.message] + ([e.hint] if e.hint else [])
    except FleetError as e:  # someone else's index.lock, say: the journal stays, the next command tries again
        return [f"an interrupted {_what(move)} cannot be finished yet: {e.message}"] + ([e.hint] if e.hint else [])
    journal(repo).unlink(missing_ok=True)
    return said


def _recover(repo: Repo, move: Move) -> list[str]:
    """What the refs say happened, and the rest of it (or its undoing); the caller drops the journal."""
    now = repo.ref_value(move.ref)
    what = f"{'merge into' if move.what == 'merge' else 'sync of'} {move.branch}"
    if now == move.old:
        warnings = _clear_locks(repo, move)
        if repo.put_back(move.ref, move.old, move.new) or any(repo.ref_value(r) == v for r, v in move.also):
            # its reflog says the move had moved it: something else put it back since
            _undo_also(repo, move)
            return [f"an interrupted {what} had moved it to {move.new[:12]}, and it was put back to {move.old[:12]} "
                    "since (by something else), before its work tree followed: files the move had written may be "
                    "there as local changes (git status); run it again"] + warnings
        return [f"an interrupted {what} had not moved it: nothing was changed"] + warnings
    if now == move.new:
        where = repo.checked_out(move.branch)
        with repo.index_lock(where, MARK + move.marker) if where is not None else nullcontext(), \
                lock.lent_to_git(repo.common_dir):
            warnings = _finish(repo, move, where, recovering=True)
        return [f"finished an interrupted {what}"] + warnings
    warnings = _clear_locks(repo, move)
    if now is not None and repo.is_ancestor(move.new, now):
        # the branch moved past the move before this command ran (a commit made with --no-verify,
        # a plain `git merge`): its work tree is wherever that left it, so only the rest is done
        warnings += _make_also(repo, move)
        undone = sorted(repo.changed_paths(move.old, move.new) - repo.changed_paths(move.old, now))
        message = (f"an interrupted {what} had moved it to {move.new[:12]}, and {move.branch} moved on to {now[:12]} "
                   "before its work tree was brought along")
        if not undone:
            return [message] + warnings
        shown = " ".join(undone[:5]) + (f" and {len(undone) - 5} more" if len(undone) > 5 else "")
        return [f"{message}: {now[:12]} undoes the {move.what}'s changes to {shown}",
                (f"see `git diff {move.new[:12]} {now[:12]}`; `git restore --source={move.new[:12]} --staged "
                 "--worktree -- PATH` brings the moved version of a path back")] + warnings
    # moved somewhere that does not hold the move: it did not land
    _undo_also(repo, move)
    return [(f"an interrupted {what} had been overtaken: {move.branch} is at {(now or 'nothing')[:12]}, which does "
             f"not hold it ({move.new[:12]}); run it again")] + warnings
