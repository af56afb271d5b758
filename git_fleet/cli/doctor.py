"""git fleet-doctor, the launch checklist, and git fleet-prune, the fully merged agents removed."""

from __future__ import annotations

import sys

import click

from ..doctor import diagnose, discard_moves_journal
from ..errors import FleetError
from ..prune import prunable
from ..prune import prune as do_prune
from . import command, note, print_json
from .output import load, print_checks


@command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--fix", is_flag=True, help="Repair what is safe to repair: reinstall the hooks, prune stale worktree records "
              "other than agents' (an agent's may be of a worktree moved by hand).")
@click.option("--discard-journal", is_flag=True,
              help="Set aside the journal of an interrupted checkpoint merge or sync that cannot be read, once you have "
                   "put right by hand what it left (doctor shows the state).")
def doctor(as_json: bool, fix: bool, discard_journal: bool) -> int:
    """Walk the checklist for starting a parallel session; say what is wrong and how to fix it.

    Checks that the config reads and names agents; that every agent's worktree exists and is on
    its branch, and no stale worktree records are left; that zones do not overlap (tracked files
    owned by no agent are listed as information: they are the orchestrator's); that the hooks
    are installed (and chained) where git runs them; that session names are distinct and the
    agents' commands and tmux can be found; that the bus can be written and has no lapsed
    claims or unreadable specs; that checkpoints are declared and name existing agents; and that
    no fleet branch is left without an agent. Each check is ok, a warning (worth knowing; the
    fleet works: no agents or checkpoints yet, an agent program or tmux missing) or a failure.
    Exits 1 only when a check fails.

    A checkpoint merge or sync that was interrupted is finished by the next fleet command in the
    main worktree, from its journal. If that journal cannot be read, nothing is guessed: merge,
    sync and checkpoint refuse, and doctor shows where the base and the work trees stand; put
    right what is half done, then --discard-journal sets the journal aside (as
    move-journal.discarded-TIME) and the fleet moves branches again.
    """
    if discard_journal:
        aside = discard_moves_journal(load("discard the journal"))
        note(f"set aside the unreadable journal as {aside}")
        return 0
    items = diagnose(load("repair the fleet" if fix else None), fix=fix)
    if as_json:
        print_json([i.as_dict() for i in items])
    else:
        print_checks(items)
    return 0 if all(i.ok for i in items) else 1


@command()
@click.option("--yes", is_flag=True, help="Do not ask first.")
@click.option("-n", "--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print what was (or would be) removed and kept as JSON.")
def prune(yes: bool, dry_run: bool, as_json: bool) -> int:
    """Remove the agents whose work is fully merged, with their worktrees and branches.

    An agent goes when its branch has work of its own and all of it is in the base, by merge or
    by a squash (merging it again would change nothing), and its worktree (wherever git has the
    branch checked out) holds no uncommitted or untracked work and is not in the middle of a
    rebase. A branch with unmerged commits and a worktree with work in it are never removed, and
    neither is an agent that has done nothing yet. Stale worktree records (their directories are
    gone) are pruned too. Asks first unless --yes; without a terminal to ask on, it refuses.

    Ignored files (build output, .env, node_modules) go with a worktree, as with git worktree
    remove; they never keep an agent, but each agent's are counted and named in the dry run, the
    question, the result lines and --json ("ignored"). git-fleet's own .fleet/ is not counted.
    """
    fleet = load(None if dry_run else "prune agents")
    found, kept, stale = prunable(fleet)
    removed: list[str] = []
    losing = [f"{c.agent}: {c.losing}" for c in found if c.losing]
    if found and not dry_run:
        names = ", ".join(c.agent for c in found)
        if not yes:
            if not sys.stdin.isatty():
                raise FleetError("\n".join([f"would remove {names}", *losing]),
                                 "pass --yes to remove them, or -n to see why")
            for line in losing:
                note(line)
            also = ", and the ignored files above" if losing else ""
            if not click.confirm(f"remove {names} (worktrees and branches{also})?", default=False):
                return 1
        removed = do_prune(fleet, found)
    elif stale and not dry_run:
        do_prune(fleet, [])  # (no agent to remove: the stale worktree records alone)
    if as_json:
        print_json({"removed": removed, "would_remove": [c.__dict__ for c in found] if dry_run else [],
                    "ignored": {c.agent: c.ignored for c in found},
                    "kept": [{"agent": a, "why": w} for a, w in kept], "stale_worktrees": stale})
        return 0
    for c in found:
        note(f"{'would remove' if dry_run else 'removed'} {c.agent}: {c.branch} {c.why}" + (f"; {c.losing}" if c.losing else ""))
    for s in stale:
        note(f"{'would prune' if dry_run else 'pruned'} stale worktree record {s}")
    for a, why in kept:
        note(f"kept {a}: {why}")
    return 0
