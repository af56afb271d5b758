"""git fleet-join: an agent of a fleet that spans machines set up on this machine: held here
(holds.py: refused while another machine holds it, unless taken over), its branch from the
remote where it exists there, its worktree, hooks and brief."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import agent_clis, brief, holds, lock, machines, worktree_setup
from .errors import FleetError, UsageError
from .fleet import Report
from .gateway import meeting

if TYPE_CHECKING:
    from .config import Agent
    from .fleet import Fleet


@dataclass
class Joined:
    agent: str
    machine: machines.Machine
    worktree: Path
    branch: str
    source: str  # where the branch came from: the remote's, this clone's, or new from the base
    created: bool
    took_over: str | None = None  # the machine whose hold was taken
    warnings: list[str] = field(default_factory=list)


def join(fleet: Fleet, name: str, *, take_over: bool = False, path: str | None = None) -> Joined:
    remote = machines.remote_of(fleet.repo)
    if remote is None:
        raise UsageError("this clone's fleet does not span machines", "git fleet-init --remote NAME first")
    agent = fleet.config.agent(name)
    machines.fetch(fleet.repo, remote)
    before = holds.before_taking(fleet.repo.pygit, remote, name)
    hold = holds.take(fleet, remote, name, take_over=take_over)
    took = hold.record.reason.removeprefix("taken over from machine ") if hold.record.reason else None
    out = Joined(name, machines.this(fleet.repo), Path(), agent.branch, "", False, took)
    where = fleet.locate(agent)
    try:
        if where is None or not where.is_dir():
            where = _make_worktree(fleet, agent, remote, path, out)
        brief.write_brief(fleet, agent)
        agent_clis.install(fleet, agent)
    except BaseException:
        if before is None or before.tip != hold.tip:
            holds.restore(fleet, remote, hold, before)
        raise
    out.worktree = where
    return out


def _make_worktree(fleet: Fleet, agent: Agent, remote: str, path: str | None, out: Joined) -> Path:
    """The agent's branch (the remote's, fast-forwarded to it if this clone's is behind) checked
    out in a new worktree, registered here."""
    published = meeting.fetch_branch(machines.at(fleet.repo), remote, agent.branch)
    local = fleet.repo.branch_tip(agent.branch)
    where = Path(path).absolute() if path else fleet.planned_worktree(agent)
    if where.exists() and (not where.is_dir() or any(where.iterdir())):
        raise FleetError(f"{where} exists and is not empty; '{agent.name}' was not set up here",
                         f"give another place: git fleet-join {agent.name} --path DIR")
    with lock.hold(fleet.repo.common_dir, fleet.waiting):
        if local is None:
            start = published or fleet.repo.resolve(fleet.config.base)
            if start is None:
                raise FleetError(f"neither {remote} nor this clone has {agent.branch}, nor the base {fleet.config.base}")
            fleet.repo.create_branch(agent.branch, start)
            out.source = f"{remote}'s {agent.branch}" if published else f"new from {fleet.config.base}"
        elif published and local != published and fleet.repo.is_ancestor(local, published):
            fleet.repo.update_refs([(f"refs/heads/{agent.branch}", published, local)], "fleet join: the remote's branch")
            out.source = f"{remote}'s {agent.branch}"
        else:
            out.source = f"this clone's {agent.branch}"
            if published and local != published and not fleet.repo.is_ancestor(published, local):
                out.warnings.append(f"{agent.branch} here and on {remote} have moved apart; this clone's is kept")
        fleet.repo.forget_worktree(where)
        fleet.repo.worktree_add(where, agent.branch)
        fleet.register(agent.name, where)
        fleet.forget_worktrees()
    report = Report()
    worktree_setup.set_up(fleet, agent, report)
    out.warnings += report.warnings
    out.created = True
    return where
