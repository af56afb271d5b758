"""git fleet-prune: the agents whose work is fully merged, found and removed with their worktrees
and branches; worktree records whose directories are gone (git fleet-doctor reports them too)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import agent_settings, agents
from .errors import FleetError
from .gateway.plumbing import git, worktree_list

if TYPE_CHECKING:
    from .fleet import Fleet

SHOWN = 5  # paths shown per finding


def some(paths: list[str]) -> str:
    """The first few paths, and how many more (doctor's findings say them the same way)."""
    return ", ".join(paths[:SHOWN]) + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def stale_worktrees(fleet: Fleet, *, agents: bool = True) -> list[str]:
    """Worktree records whose directories are gone (git calls them prunable); without `agents`,
    not those of an agent's branch."""
    branches = {f"refs/heads/{a.branch}" for a in fleet.config.agents.values()}
    places = {os.path.realpath(p) for a in fleet.config.agents.values()
              for p in (fleet.planned_worktree(a), fleet.registered_path(a)) if p is not None}
    return [f"{t['worktree']} ({t['prunable'] or 'gone'})" for t in worktree_list(fleet.repo.common_dir)
            if "prunable" in t and (agents or (t.get("branch") not in branches
                                               and os.path.realpath(t["worktree"]) not in places))]


@dataclass
class Candidate:
    agent: str
    branch: str
    worktree: str | None  # None: it has none in this repository
    why: str  # why it can go: "merged", "merged (squashed)"
    tip: str
    # ignored files and directories that `git worktree remove` deletes with the worktree, unasked
    # (build output, .env, node_modules); git-fleet's own .fleet/ and hooks are not counted
    ignored: list[str] = field(default_factory=list)

    @property
    def losing(self) -> str:
        """What goes with the worktree besides what git has, in words ("" for nothing)."""
        if not self.ignored:
            return ""
        return f"with its worktree go {len(self.ignored)} ignored file(s) or folder(s): {some(self.ignored)}"


def prunable(fleet: Fleet) -> tuple[list[Candidate], list[tuple[str, str]], list[str]]:
    """Agents whose work is fully merged and whose worktrees hold nothing else, the agents kept
    (with the reason), and stale worktree records."""
    repo, base = fleet.repo, fleet.config.base
    base_tip = repo.resolve(base)
    stale = stale_worktrees(fleet)
    if base_tip is None:
        return [], [], stale
    mainline = set(git(["rev-list", "--first-parent", base_tip], repo.common_dir).stdout.decode().split())
    base_tree = git(["rev-parse", f"{base_tip}^{{tree}}"], repo.common_dir).stdout.decode().strip()
    found, kept = [], []
    in_checkpoint = {a for cp in fleet.config.checkpoints.values() for a in cp.agents}
    for agent in fleet.config.agents.values():
        tip = repo.branch_tip(agent.branch)
        if tip is None:
            continue
        own = git(["rev-list", "--first-parent", tip], repo.common_dir).stdout.decode().split()
        if all(c in mainline for c in own):
            kept.append((agent.name, "no work of its own yet"))
            continue
        unmerged = repo.count_unmerged(agent.branch, base)
        if unmerged == 0:
            why = "merged"
        else:
            merged = git(["merge-tree", "--write-tree", base_tip, tip], repo.common_dir, check=False)
            if merged.returncode != 0 or merged.stdout.decode().split()[0] != base_tree:
                kept.append((agent.name, f"{unmerged} commit(s) not in {base}"))
                continue
            why = f"its changes are all in {base} (squashed or picked)"
        # where git has the branch checked out (a worktree moved by hand, or mid-rebase,
        # included), never the configured path: a directory there may be anything
        tree = fleet.tree_of(agent)
        where = tree.path if tree is not None else None
        if tree is not None and tree.branch != agent.branch:
            doing = (f"is rebasing or bisecting {agent.branch}" if tree.busy == agent.branch
                     else f"is on {tree.branch}" if tree.branch else "has a detached HEAD")
            kept.append((agent.name, f"its worktree {where} {doing}: finish that first"))
            continue
        ignored = []
        if where is not None and where.is_dir():
            entries = repo.status(where, ignored=True)
            dirty = [p for code, p in entries if code != "!!"]
            if dirty:
                kept.append((agent.name, f"uncommitted or untracked work: {some(dirty)}"))
                continue
            ignored = [p for code, p in entries if code == "!!" and p.split("/", 1)[0] != ".fleet"
                       and not agent_settings.only_ours(where, p)]
        if agent.name in in_checkpoint:
            kept.append((agent.name, "named by a checkpoint in the config"))
            continue
        found.append(Candidate(agent.name, agent.branch, str(where) if where is not None else None, why, tip,
                               ignored))
    return found, kept, stale


def prune(fleet: Fleet, candidates: list[Candidate]) -> list[str]:
    """Remove them. git itself removes each worktree (it refuses one that is not clean), and the
    branch goes only if it still points where it did when it was judged merged."""
    done = []
    fleet.repo.worktree_prune()
    for c in candidates:
        where = Path(c.worktree) if c.worktree else None
        if where is not None and where.is_dir():
            try:
                fleet.repo.worktree_remove(where)
            except FleetError as e:
                raise FleetError(f"agent '{c.agent}': {e.message}", "nothing was removed for it") from None
        agents.remove(fleet, c.agent, force=True, keep_branch=True)
        if fleet.repo.branch_tip(c.branch) == c.tip:
            fleet.repo.delete_branch(c.branch, c.tip)
        done.append(c.agent)
    return done
