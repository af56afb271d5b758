"""A checkpoint merge in a fleet across machines: what it merges is what the remote has (the
branch of an agent that runs on another machine, as that machine last published it), and the new
base and its tag are published in one atomic push, refused if the remote's base moved meanwhile,
before the base moves here: refused, nothing changed anywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import holds, machines
from .errors import FleetError
from .gateway import meeting
from .gateway.meeting import Update
from .pause import pause

if TYPE_CHECKING:
    from .config import Agent
    from .fleet import Fleet


@dataclass
class Across:
    remote: str
    base_there: str | None  # the remote's base, as fetched
    tips: dict[str, str] = field(default_factory=dict)  # agents that run elsewhere -> their published tip
    notes: list[str] = field(default_factory=list)


def gather(fleet: Fleet, agents: list[Agent]) -> Across | None:
    """The remote's base and the published branches of the agents that run on other machines;
    None where the fleet does not span machines. Refused where the remote's base is ahead of this
    clone's, or the two moved apart."""
    remote = machines.remote_of(fleet.repo)
    if remote is None:
        return None
    repo, base = fleet.repo, fleet.config.base
    heads = machines.heads(repo, remote)
    meeting.fetch_tags(machines.at(repo), remote, "fleet/")  # (the rounds merged from other clones count)
    machines.fetch(repo, remote)
    here, there = repo.branch_tip(base), heads.get(base)
    if there is not None and here is not None and there != here and not repo.is_ancestor(there, here):
        if repo.is_ancestor(here, there):
            raise FleetError(f"{base} on '{remote}' is ahead of this clone's ({there[:12]}); nothing was changed",
                             f"bring it here first: git pull --ff-only {remote} {base}")
        raise FleetError(f"{base} here and on '{remote}' have moved apart; nothing was changed",
                         f"merge them first (git pull {remote} {base}), then merge the agents")
    out = Across(remote, there)
    me = machines.this(repo).id
    for agent in agents:
        hold = holds.read(repo.pygit, remote, agent.name)
        if hold is None or me in (hold.machine, hold.record.machine) or hold.record.op == "free":
            continue  # (it runs here, was handed off from here, or runs nowhere yet: its branch here is the truth)
        published = heads.get(agent.branch)
        out.tips[agent.name] = published or here or ""
        out.notes.append(f"'{agent.name}' runs on {hold.where(repo.pygit, remote)}: merged as it published "
                         f"{agent.branch} to '{remote}'" + (f" ({published[:12]})" if published else " (nothing yet)"))
    return out


def publish(fleet: Fleet, across: Across, new: str, tag: tuple[str, str] | None) -> None:
    """The new base (and the checkpoint's tag) on the remote in one atomic push, only if the
    remote's base is still what this merge started from."""
    pause("merge-publishing")
    updates = [Update(f"refs/heads/{fleet.config.base}", new, across.base_there)]
    if tag is not None:
        updates.append(Update(tag[0], tag[1], None))
    pushed = meeting.push(machines.at(fleet.repo), across.remote, updates, verify=True, key=machines.key(fleet.repo))
    if not pushed.won:
        why = pushed.refused or f"{fleet.config.base} there moved while this merge was made"
        raise FleetError(f"remote '{across.remote}' did not take the merge: {why}; nothing was changed here or there",
                         f"merge again (it fetches {fleet.config.base} first)")
