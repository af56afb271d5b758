"""git fleet-sync: the base's new commits into agents' branches after a checkpoint, each moved
with its work tree crash-safely (moves.py), or refused and left exactly as it was."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import lost_journal, machines, moves, runner
from .config import Agent, Config
from .errors import FleetError
from .gateway import meeting
from .gateway.repo import Repo

if TYPE_CHECKING:
    from .fleet import Fleet


def sync(fleet: Fleet, names: Sequence[str]) -> list[SyncResult]:
    """Bring the base into the named agents' branches (all by default); see sync_one."""
    with fleet.editing():
        lost_journal.refuse_unreadable(fleet.repo, fleet.config.base)
        chosen = [fleet.config.agent(n) for n in names] if names else list(fleet.config.agents.values())
        base = _published_base(fleet)
        spans = machines.remote_of(fleet.repo) is not None  # (then every agent's branch is published)
        return [sync_one(fleet.repo, fleet.config, a, base, shared=spans) for a in chosen]


def _published_base(fleet: Fleet) -> str | None:
    """In a fleet across machines: the remote's base, when it is ahead of this clone's (a
    checkpoint merged on another machine); it is what the agents here take in."""
    remote = machines.remote_of(fleet.repo)
    if remote is None:
        return None
    try:
        there = machines.heads(fleet.repo, remote).get(fleet.config.base)
    except meeting.Unreachable:
        return None  # (the remote away: this clone's base, as on one machine)
    here = fleet.repo.branch_tip(fleet.config.base)
    return there if there is not None and here is not None and fleet.repo.is_ancestor(here, there) else None



@dataclass
class SyncResult:
    agent: str
    action: str  # "merged", "rebased", "up to date", or "refused"
    why: str = ""
    hint: str | None = None  # for a refusal: what to do


def sync_one(repo: Repo, cfg: Config, agent: Agent, published: str | None = None, *, shared: bool = False) -> SyncResult:
    """Bring the base's new commits into one agent's branch, or refuse and change nothing. The
    work tree that moves with the branch is wherever git has the branch checked out (a worktree
    moved by hand included), never a path worked out from the configuration. `published`: the
    remote's base, ahead of this clone's, to bring in instead; `shared`: the branch is another
    machine's to fetch (a fleet across machines), so never rebased."""
    base_tip = published or repo.branch_tip(cfg.base)
    tip = repo.branch_tip(agent.branch)
    if base_tip is None or tip is None:
        return SyncResult(agent.name, "refused", f"branch {cfg.base if base_tip is None else agent.branch} is missing")
    if repo.merge_base(tip, base_tip) == base_tip:
        return SyncResult(agent.name, "up to date")
    tree = repo.worktree_with(agent.branch)
    if tree is not None and tree.branch != agent.branch:  # its HEAD is elsewhere until that ends
        return SyncResult(agent.name, "refused", f"{agent.branch} is being rebased or bisected in {tree.path}; "
                          "finish that first (git rebase --continue or --abort, git bisect reset)")
    worktree = tree.path if tree is not None else None
    if worktree is not None:
        dirty = repo.dirty_paths(worktree)
        if dirty:
            return SyncResult(agent.name, "refused", "uncommitted work in " + ", ".join(dirty[:5]))
    if repo.merge_base(tip, base_tip) == tip:  # nothing of its own: fast-forward, no merge commit
        return _move(repo, agent, worktree, tip, base_tip, "fast-forwarded", cfg.base)
    shared = shared or repo.is_published(agent.branch)
    if cfg.sync == "rebase" and not shared:
        rebased, why = repo.rebased(tip, base_tip)
        if rebased is None:
            return SyncResult(agent.name, "refused", f"rebasing onto {cfg.base} would conflict: {why}")
        return _move(repo, agent, worktree, tip, rebased, "rebased", cfg.base)
    [res] = repo.merge_trees([(tip, base_tip)], cfg.union)
    if not res.clean:
        return SyncResult(agent.name, "refused", f"merging {cfg.base} would conflict in " + ", ".join(res.conflicts))
    new = repo.commit_tree(res.tree, [tip, base_tip], f"Merge {cfg.base} into {agent.branch} (git fleet-sync)\n")
    result = _move(repo, agent, worktree, tip, new, "merged", cfg.base)
    if cfg.sync == "rebase" and result.action == "merged":
        result.why = "(the branch is published, so it was merged rather than rebased)"
    return result


def _move(repo: Repo, agent: Agent, worktree: Path | None, old: str, new: str, action: str, base: str) -> SyncResult:
    """Move an agent's branch and the work tree that has it checked out (moves.py: a kill at any
    moment leaves the old state or the new one)."""
    try:
        warnings = moves.carry_out(repo, moves.Move(f"refs/heads/{agent.branch}", old, new, "sync"),
                                   f"git-fleet: sync {agent.branch} with {base}")
    except runner.Stopped:
        raise  # told to stop: the agents after this one are not synced
    except FleetError as e:
        return SyncResult(agent.name, "refused", e.message.replace("\n", "; "), e.hint)
    return SyncResult(agent.name, action, "; ".join(warnings))
