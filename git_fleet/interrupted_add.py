"""A `git fleet-add` killed at any moment: it records what it is about to make first (the
intent), and the next fleet command that takes the lock removes the branch and worktree it made
while they hold nothing new, or adopts them (registers the agent as the add meant to) when work
was done there since."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config_edit, processes
from .config import Agent
from .errors import FleetError
from .gateway import plumbing
from .gateway.worktree_moves import remove_dead_lock

if TYPE_CHECKING:
    from .fleet import Fleet


def _made_by_git_for(where: Path, common_dir: Path) -> bool:
    """Whether `where` is a linked worktree of this repository (its .git file points here)."""
    link = plumbing.read_file(str(where / ".git")) or ""
    return link.startswith("gitdir: ") and Path(link[8:]).parent == common_dir / "worktrees"


def agent_record(agent: Agent) -> dict[str, Any]:
    return {k: getattr(agent, k) for k in ("name", "zone", "branch", "worktree", *Agent.SESSION_KEYS, "env", "port")}


def _agent_from_record(data: dict[str, Any]) -> Agent:
    return Agent(**{**data, "zone": tuple(data["zone"]), "env": tuple(tuple(kv) for kv in data["env"])})


def intent_path(fleet: Fleet) -> Path:
    return fleet.repo.common_dir / "fleet" / "adding"


def recover(fleet: Fleet) -> list[str]:
    """Finish what a killed `git fleet-add` left (we hold the lock, so its process is gone): a
    branch and worktree it made but never registered are removed while they hold nothing new,
    and adopted, registered as the add meant to, when work was done in them since."""
    intent = intent_path(fleet)
    try:
        data = json.loads(intent.read_text(encoding="utf-8"))
        agent = _agent_from_record(data["agent"])
        where, start, made_branch = Path(data["worktree"]), data["base"], bool(data["made_branch"])
        since = float(data.get("time", 0))
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [(f"{intent}: the record of an interrupted `git fleet-add` cannot be read ({e}); "
                "remove it after checking `git worktree list` and `git branch`")]
    said = _dead_config_lock(fleet, since)
    if agent.name in fleet.config.agents:
        intent.unlink()  # it was registered: only the record was left
        return said
    fleet.register(agent.name, None)  # (adopting registers it again)
    # git killed inside `git update-ref` or `git worktree add` leaves its lock, or a worktree
    # record so new that `git worktree list` fails on it
    kept_lock = made_branch and remove_dead_lock(
        fleet.repo.common_dir / "refs" / "heads" / f"{agent.branch}.lock", start, since) is False
    if fleet.repo.drop_unwritten_record(where):
        fleet.forget_worktrees()
    tree = next((w for w in fleet.worktrees() if not w.bare and os.path.realpath(w.path) == os.path.realpath(where)
                 and (w.branch == agent.branch or w.locked is not None)), None)
    # git locks a worktree it adds until its checkout is done: locked, it was killed midway, and
    # the files it had not written yet are no one's deletions
    half = tree is not None and tree.locked is not None
    ours = where.is_dir() and _made_by_git_for(where, fleet.repo.common_dir)
    tip = fleet.repo.branch_tip(agent.branch)
    if tree is not None and ours:
        changed, unwritten = _work_since(fleet, where, start, half)
        if changed or (tip is not None and tip != start):
            return _adopt(fleet, agent, where, unwritten)
        fleet.repo.worktree_remove(where, force=True)  # a lock of git's own included
    elif where.is_dir() and set(os.listdir(where)) <= {".git"}:
        shutil.rmtree(where)  # git was killed while making it: its start, nothing else
    elif where.is_dir():
        intent.unlink()
        return _left_as_it_is(fleet, agent, where)
    fleet.repo.forget_worktree(where)  # (a record git left locked, half made, included)
    fleet.forget_worktrees()
    if made_branch and tip == start and not any(w.has(agent.branch) for w in fleet.worktrees()):
        fleet.repo.delete_branch(agent.branch, start)
    intent.unlink()
    return said + [f"removed what an interrupted `git fleet-add {agent.name}` had made; nothing was registered"] + (
        [f"{fleet.repo.common_dir}/refs/heads/{agent.branch}.lock was left: another git process holds it, or one "
         "was killed"] if kept_lock else [])


def _dead_config_lock(fleet: Fleet, since: float) -> list[str]:
    """A `git config` the killed add ran (its worktree record) leaves config.lock, and then every
    change of the repository's config fails. Removed only when it was made since the add began
    and no process holds it open (git holds its lock open until it renames it): a live git's
    is never touched."""
    lock_file = fleet.repo.common_dir / "config.lock"
    try:
        made = lock_file.stat().st_mtime
    except FileNotFoundError:
        return []
    if made < since - 1 or processes.held_open(lock_file) is not False:
        return [f"{lock_file} exists: another git process holds it, or one was killed holding it"]
    lock_file.unlink(missing_ok=True)
    return [f"removed {lock_file}, left by a git the interrupted add ran"]


def _work_since(fleet: Fleet, where: Path, start: str, half: bool) -> tuple[list[str], list[str] | None]:
    """What was done in the worktree a killed `git fleet-add` made, since it made it: the paths
    changed, and the files its checkout had not written yet where it was left half done (None
    when it was done)."""
    if half:
        return fleet.repo.unfinished_checkout(where, start)
    changed = fleet.repo.dirty_paths(where)
    # ignored files count as work too (a `git fleet-add` would not have made them), git-fleet's own aside
    changed += [p for code, p in fleet.repo.status(where, ignored=True) if code == "!!" and p.split("/", 1)[0] != ".fleet"]
    return changed, None


def _left_as_it_is(fleet: Fleet, agent: Agent, where: Path) -> list[str]:
    """What to say of a directory a killed `git fleet-add` made that is no longer its worktree."""
    registered = next((w for w in fleet.worktrees() if os.path.realpath(w.path) == os.path.realpath(where)), None)
    what = f"is on {registered.branch or 'a detached HEAD'} now" if registered else "is not a worktree of it"
    return [f"an interrupted `git fleet-add {agent.name}` made {where}, which {what}: it is left as it is, "
            "and nothing was registered",
            f"adopt it with git fleet-add {agent.name} --branch BRANCH --path {where} --zone ..., or remove "
            "it yourself (git worktree remove)"]


def _adopt(fleet: Fleet, agent: Agent, where: Path, unwritten: list[str] | None) -> list[str]:
    """Register what a killed `git fleet-add` made, as it meant to, finishing the checkout it
    left half done (unwritten: the files to write; None when it was done)."""
    fleet.register(agent.name, where)  # first: a kill after the config is written leaves both
    try:
        fleet.save(config_edit.with_agent(fleet.config, fleet.text, agent))
    except FleetError as e:
        fleet.register(agent.name, None)
        return [(f"an interrupted `git fleet-add {agent.name}` left {where} (branch {agent.branch}) with work "
                f"in it, and it cannot be registered: {e.message}"),
                f"adopt it by hand: git fleet-add {agent.name} --branch {agent.branch} --path {where} --zone ..."]
    if unwritten is not None:
        fleet.repo.finish_checkout(where, agent.branch, unwritten)
    intent_path(fleet).unlink()
    fleet.adopted = agent.name
    return [(f"adopted agent '{agent.name}' ({where}, branch {agent.branch}): an interrupted `git fleet-add` "
            "made it and work was done there since")]

