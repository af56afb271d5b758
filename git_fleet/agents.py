"""Adding, changing and removing agents, with their branches and worktrees, and declaring
checkpoints: every edit of the config is checked first and written whole (Fleet.save), and
nothing is left half made when a step fails (interrupted_add.py: when the process is killed)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import (
    agent_clis,
    approval,
    brief,
    config,
    config_edit,
    durable,
    interrupted_add,
    ownership,
    sandbox_layout,
    templates,
    worktree_setup,
)
from .config import Agent
from .errors import FleetError, UsageError
from .fleet import Fleet, Report
from .pause import pause
from .processes import working_in
from .zones import PatternError, Zone


def _check_templates(name: str, session: dict[str, Any]) -> None:
    for key in ("command", "resume"):
        template = session.get(key)
        if template:
            bad = templates.unknown_placeholder(template)
            if bad:
                raise UsageError(f"agent '{name}': unknown placeholder {{{bad}}} in its {key}",
                                 "placeholders: " + ", ".join(f"{{{p}}}" for p in templates.PLACEHOLDERS))


def add(fleet: Fleet, name: str, zone: Sequence[str], *, branch: str | None = None, path: str | None = None,
        base: str | None = None, allow_overlap: bool = False, force: bool = False,
        session: dict[str, str | None] | None = None, env: tuple[tuple[str, str], ...] = ()) -> tuple[Agent, Report]:
    with fleet.editing():
        return _add(fleet, name, zone, branch=branch, path=path, base=base, allow_overlap=allow_overlap,
                         force=force, session=session or {}, env=env)


def _add(fleet: Fleet, name: str, zone: Sequence[str], *, branch: str | None, path: str | None, base: str | None,
         allow_overlap: bool, force: bool, session: dict[str, str | None],
         env: tuple[tuple[str, str], ...]) -> tuple[Agent, Report]:
    report = Report()
    _check_templates(name, session)
    fleet.may_edit("add agents")
    config.check_agent_name(name)
    cfg = fleet.config
    if name in cfg.agents and _adopted_as_asked(fleet, cfg.agents[name], zone, branch, path):
        report.notes.append(f"agent '{name}' was made by an interrupted `git fleet-add` and is now registered")
        brief.write_brief(fleet, cfg.agents[name])
        agent_clis.install(fleet, cfg.agents[name])
        worktree_setup.set_up(fleet, cfg.agents[name], report)
        return cfg.agents[name], report
    if name in cfg.agents:
        raise FleetError(f"agent '{name}' already exists (branch {cfg.agents[name].branch})",
                         f"remove it first with `git fleet-rm {name}`, or pick another name")
    if not zone:
        raise UsageError(f"agent '{name}' needs a zone", "give one or more --zone PATTERN (gitignore syntax)")
    try:
        new_zone = Zone(list(zone), fleet.config.ignore_case)
    except PatternError as e:
        raise UsageError(e.message, e.hint) from None

    count = len(cfg.agents) + 1
    if count > cfg.max_agents and not force:
        raise FleetError(
            f"refusing a fleet of {count} agents: the limit is {cfg.max_agents} (max_agents in {config.CONFIG_NAME})",
            "beyond 10 agents coordination costs exceed the benefits; pass --force to go ahead anyway")
    if count > cfg.warn_agents:
        report.warnings.append(f"this makes {count} agents; beyond {cfg.warn_agents} coordination costs grow "
                               "(3-7 is the sweet spot)")

    base_ref = base or cfg.base
    base_commit = fleet.repo.resolve(base_ref)
    report.warnings += ownership.check_zone(fleet, name, zone, base_commit)
    if not allow_overlap:
        ownership.refuse_overlap(fleet, name, new_zone, base_commit)

    branch, tip = _branch_for(fleet, name, branch, base, base_ref, base_commit, report)

    agent = Agent(name=name, zone=tuple(zone), ignore_case=cfg.ignore_case, branch=branch,
                  session=session.get("session"), model=session.get("model"), command=session.get("command"),
                  resume=session.get("resume"), env=env, port=worktree_setup.free_port(fleet))
    # where this clone keeps it is this clone's (registered below), never the committed file's
    where = Path(os.path.abspath(path)) if path else fleet.planned_worktree(agent)
    if where.exists() and (not where.is_dir() or any(where.iterdir())):
        raise FleetError(f"worktree path {where} already exists and is not empty",
                         "give another place with --path DIR")

    new_text = config_edit.with_agent(cfg, fleet.text, agent)  # validated before anything is written

    _make(fleet, agent, where, tip, base_commit, new_text)
    brief.write_brief(fleet, agent)
    agent_clis.install(fleet, agent)
    made = (f"new branch {branch} from {base_ref} ({(base_commit or '')[:7]})" if tip is None
            else f"branch {branch} adopted as it is ({tip[:7]})")
    report.notes.append(f"added agent '{name}': {made}, worktree {where}")
    worktree_setup.set_up(fleet, agent, report)
    return agent, report


def _branch_for(fleet: Fleet, name: str, branch: str | None, base: str | None, base_ref: str,
                base_commit: str | None, report: Report) -> tuple[str, str | None]:
    """The agent's branch, checked (valid, not the base's, nobody's, not checked out), and its tip
    when it exists already (then it is adopted as it is)."""
    cfg = fleet.config
    branch_given = branch is not None
    branch = branch or cfg.default_branch(name)
    if not fleet.repo.valid_branch_name(branch):
        raise UsageError(f"'{branch}' is not a valid branch name", "see `git help check-ref-format`")
    if branch == cfg.base:
        raise UsageError(f"agent '{name}' cannot work on the base branch '{cfg.base}'",
                         "agents work on branches of their own; omit --branch")
    for other in cfg.agents.values():
        if other.branch == branch:
            raise FleetError(f"branch {branch} already belongs to agent '{other.name}'")
    owner = sandbox_layout.claimed_by(fleet, branch, name)
    if owner is not None:
        raise FleetError(f"branch {branch} would be in the ref directory of sandboxed agent '{owner}', which it may write",
                         f"name it outside refs/heads/{os.path.dirname(fleet.config.agent(owner).branch)}/ (--branch)")
    tip = fleet.repo.branch_tip(branch)
    if tip is not None and not branch_given:
        raise FleetError(f"branch {branch} already exists",
                         f"adopt it as it is with --branch {branch}, or delete it first (git branch -d {branch})")
    if tip is not None and base is not None:
        report.warnings.append(f"--base {base} is ignored: the existing branch {branch} is adopted as it is")
    if tip is None and base_commit is None:
        raise FleetError(f"base '{base_ref}' does not exist in this repository",
                         "commit something on the base branch first, or give --base REF"
                         if base is None else "name an existing branch, tag or commit")
    for wt in fleet.repo.worktrees():
        if wt.has(branch):
            raise FleetError(f"branch {branch} is checked out in {wt.path}",
                             "an agent needs a worktree of its own; switch that worktree to another branch first")
    return branch, tip


def _make(fleet: Fleet, agent: Agent, where: Path, tip: str | None, base_commit: str | None, new_text: str) -> None:
    """Make the agent's branch (unless adopted) and worktree, record where, and write the config:
    all of it, or (a failure) none of it; a kill leaves the intent record (interrupted_add.py)."""
    name, branch = agent.name, agent.branch
    # a record of what is about to be made: a process killed before the config is written
    # leaves it, and the next command that takes the lock undoes (or adopts) what it finds
    intent = interrupted_add.intent_path(fleet)
    durable.replace(intent, json.dumps({"agent": interrupted_add.agent_record(agent), "worktree": str(where), "time": time.time(),
                                     "base": base_commit if tip is None else tip, "made_branch": tip is None}))
    created_branch = created_tree = False
    try:
        if tip is None:
            assert base_commit is not None
            fleet.repo.create_branch(branch, base_commit)
            created_branch = True
        pause("add-after-branch")
        fleet.repo.worktree_add(where, branch)
        created_tree = True
        fleet.register(name, where)
        pause("add-after-worktree")
        fleet.forget_worktrees()
        fleet.save(new_text)
    except BaseException:
        if created_tree:
            fleet.register(name, None)
            fleet.repo.worktree_remove(where, force=True)
        fleet.repo.forget_worktree(where)
        if created_branch:
            fleet.repo.delete_branch(branch, base_commit or "")
        fleet.forget_worktrees()
        intent.unlink()
        raise
    intent.unlink()


def _adopted_as_asked(fleet: Fleet, agent: Agent, zone: Sequence[str], branch: str | None, path: str | None) -> bool:
    """Whether this command just adopted `agent` from a killed `git fleet-add` (see
    _undo_interrupted_add) that asked for what this one asks: then this add is that one, done."""
    return (fleet.adopted == agent.name and agent.zone == tuple(zone) and branch in (None, agent.branch)
            and (path is None or os.path.realpath(path) == os.path.realpath(fleet.worktree_of(agent))))


def set_agent(fleet: Fleet, name: str, *, zone: Sequence[str] = (), allow_overlap: bool = False,
        session: dict[str, str | None] | None = None, sandbox: bool | None = None) -> Agent:
    """Change an agent's zone, session settings or sandbox, with the same checks as add."""
    with fleet.editing():
        fleet.may_edit("change agents")
        agent = fleet.config.agent(name)
        changes: dict[str, Any] = {k: v for k, v in (session or {}).items() if v is not None}
        _check_templates(name, changes)
        if zone:
            try:
                new_zone = Zone(list(zone), fleet.config.ignore_case)
            except PatternError as e:
                raise UsageError(e.message, e.hint) from None
            fleet.tell(ownership.check_zone(fleet, name, zone, fleet.repo.resolve(fleet.config.base)))
            if not allow_overlap:
                others = Fleet(fleet.repo, fleet.main, dataclasses.replace(
                    fleet.config, agents={k: v for k, v in fleet.config.agents.items() if k != name}), fleet.text)
                ownership.refuse_overlap(others, name, new_zone, fleet.repo.resolve(fleet.config.base))
            changes["zone"] = tuple(zone)
        if sandbox is not None:
            changes.update(_sandboxing(fleet, agent, sandbox))
        if not changes:
            raise UsageError("nothing to change", "give --zone, --session, --model, --command, --resume or --sandbox")
        updated = dataclasses.replace(agent, **changes)
        text = config_edit.with_agent(fleet.config, fleet.text, updated)
        moved = updated.branch != agent.branch and fleet.repo.branch_tip(agent.branch) is not None
        if moved:
            fleet.repo.rename_branch(agent.branch, updated.branch)
        try:
            fleet.save(text)
        except BaseException:
            if moved:  # (the configuration still names the old branch: so does the repository again)
                fleet.repo.rename_branch(updated.branch, agent.branch)
            raise
        brief.write_brief(fleet, updated)
        agent_clis.install(fleet, updated)
        agent_clis.tidy(fleet)
        return updated


def _sandboxing(fleet: Fleet, agent: Agent, on: bool) -> dict[str, Any]:
    """The changes that turn the agent's sandbox on or off. On, its branch must have a ref
    directory of its own (sandbox_layout.py): one named <prefix><agent> (the default) is moved
    to <prefix><agent>/work, with its reflog and its worktree's HEAD; another is refused."""
    if not on:
        return {"sandbox": False}
    why = sandbox_layout.problem(fleet, agent)
    if why is not None and not why.startswith("its branch"):
        raise FleetError(f"agent '{agent.name}' cannot run sandboxed: {why}",
                         "git fleet-doctor says what this system supports")
    if why is None:
        return {"sandbox": True}
    new = sandbox_layout.sandboxed_branch(fleet, agent)
    if agent.branch != f"{fleet.config.branch_prefix}{agent.name}" or fleet.repo.branch_tip(new) is not None:
        raise FleetError(f"agent '{agent.name}' cannot run sandboxed: {why}",
                         f"a sandboxed agent's branch needs a ref directory of its own: name it like {new}")
    return {"sandbox": True, "branch": new}


def declare_checkpoint(fleet: Fleet, name: str, agents: Sequence[str], test: str | None = None,
                   timeout: str | None = None) -> config.Checkpoint:
    with fleet.editing():
        fleet.may_edit("declare checkpoints")
        return fleet.save(config_edit.with_checkpoint(fleet.config, fleet.text, name, agents, test, timeout)).checkpoint(name)


def remove(fleet: Fleet, name: str, *, force: bool = False, keep_branch: bool = False) -> Report:
    with fleet.editing():
        return _remove(fleet, name, force=force, keep_branch=keep_branch)


def _remove(fleet: Fleet, name: str, *, force: bool, keep_branch: bool) -> Report:
    report = Report()
    fleet.may_edit("remove agents")
    agent = fleet.config.agent(name)
    for cp in fleet.config.checkpoints.values():
        if name in cp.agents:
            raise FleetError(f"agent '{name}' is part of checkpoint '{cp.name}'",
                             f"take it out of [checkpoints.{cp.name}] in {config.CONFIG_NAME} first")
    where = fleet.locate(agent)
    has_tree = where is not None and where.is_dir()
    moved = [w for w in fleet.worktrees() if w.prunable and agent.branch in (w.branch, w.busy)]
    if where is None and moved and not force:
        raise FleetError(f"agent '{name}' has a worktree record at {moved[0].path} whose directory is gone: moved "
                         "by hand, with its work, or deleted?",
                         f"moved: git worktree repair <its new place>, then git fleet-rm {name} sees its work; "
                         "deleted: pass --force")
    if where is not None and has_tree:
        # never pull the worktree out from under a running agent (even with --force, which is
        # about its uncommitted work): it would go on in a deleted directory, out of sight
        busy = working_in(where)
        if busy:
            raise FleetError(f"agent '{name}' is still running in {where}: "
                             + ", ".join(busy[:3]) + (" and more" if len(busy) > 3 else ""),
                             f"stop it first: git fleet-down {name} (or end those processes), then git fleet-rm {name}")
    if where is not None and has_tree and not force:
        dirty = fleet.repo.dirty_paths(where)
        if dirty:
            shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
            raise FleetError(f"agent '{name}' has uncommitted work in {where}: {shown}",
                             "commit or discard it first, or pass --force to throw it away")
    unmerged = fleet.repo.count_unmerged(agent.branch, fleet.config.base)
    if unmerged and not force:
        raise FleetError(f"branch {agent.branch} has {unmerged} commit(s) that {fleet.config.base} does not have",
                         f"merge them first, or pass --force (the branch is kept; delete it with "
                         f"`git branch -D {agent.branch}`)")
    new_text = config_edit.without_agent(fleet.config, fleet.text, name)
    if where is not None and has_tree:
        fleet.repo.worktree_remove(where, force=force)
    fleet.register(name, None)
    for stale in (w for w in fleet.worktrees() if w.prunable and agent.branch in (w.branch, w.busy)):
        fleet.repo.forget_worktree(stale.path)  # its directory is gone: its record goes with the agent
    fleet.forget_worktrees()
    fleet.save(new_text)
    agent_clis.removed(fleet, name)
    tip = fleet.repo.branch_tip(agent.branch)
    if tip is None:
        pass
    elif unmerged or keep_branch:
        if unmerged:
            report.warnings.append(f"kept branch {agent.branch}: it has {unmerged} unmerged commit(s)")
    elif not any(w.has(agent.branch) for w in fleet.worktrees()):
        fleet.repo.delete_branch(agent.branch, tip)
        report.notes.append(f"deleted branch {agent.branch} (fully merged into {fleet.config.base})")
    report.notes.append(f"removed agent '{name}'")
    return report


def describe(fleet: Fleet) -> list[dict[str, Any]]:
    trees = {os.path.realpath(w.path): w for w in fleet.worktrees()}
    rows = []
    for a in fleet.config.agents.values():
        located = fleet.locate(a)
        where = located or fleet.planned_worktree(a)
        wt = trees.get(os.path.realpath(where))
        tip = fleet.repo.branch_tip(a.branch)
        state = "ok"
        if located is None or wt is None or not where.is_dir():
            state = "missing worktree"
        elif not wt.has(a.branch):
            state = f"worktree on {wt.branch or 'detached HEAD'}"
        if tip is None:
            state = "missing branch"
        rows.append({"agent": a.name, "branch": a.branch, "worktree": str(where), "zone": list(a.zone),
                     "head": tip, "state": state})
    return rows


def approve_zones(fleet: Fleet) -> list[str]:
    """Approve the zones as the file has them now; returns what changed since the last approval."""
    with fleet.editing():
        fleet.refuse_agents("approve zones")
        unapproved = approval.check(fleet.repo.common_dir, fleet.config, fleet.overlap_pairs)
        approval.record(fleet.repo.common_dir, fleet.text)
        return unapproved.lines()
