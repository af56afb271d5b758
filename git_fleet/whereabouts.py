"""Where each agent of a fleet across machines runs, as this clone knows it: the machine that
holds it (holds.py), since when, when this clone last heard from it (a new record of its hold,
first seen here, on this clone's clock), and its branch as that machine last published it; with
how fresh that knowledge is, and why, when the remote did not answer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import holds, machines, publish
from .errors import FleetError
from .gateway import meeting
from .remote_bus.view import first_seen

if TYPE_CHECKING:
    from .fleet import Fleet


@dataclass
class Whereabouts:
    remote: str
    fetched: float | None  # when the remote last answered a fetch of this clone's
    stale: str | None = None  # why what is shown is not fresh
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: dict[str, str] = field(default_factory=dict)  # agent -> its branch's tip, as published

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.remote, "fetched_age": None if self.fetched is None else round(time.time() - self.fetched, 1),
                "stale": self.stale}


def look(fleet: Fleet, fetch: bool = True) -> Whereabouts | None:
    """None where the fleet does not span machines. `fetch`: ask the remote first (else, and when
    it does not answer, what the last fetch brought)."""
    remote = machines.remote_of(fleet.repo)
    if remote is None:
        return None
    place = machines.place(fleet.repo, remote)
    out = Whereabouts(remote, None)
    heads: dict[str, str] = {}
    if fetch:
        try:
            machines.fetch(fleet.repo, remote)
            heads = machines.heads(fleet.repo, remote)
        except FleetError as e:
            out.stale = e.message
    if not heads:
        heads = machines.known_heads(fleet.repo, remote)
    out.fetched = meeting.fetched_at(place / "fetched")
    me = machines.this(fleet.repo).id
    repo = fleet.repo.pygit
    rounds = publish.last(fleet.repo, remote)
    for agent in fleet.config.agents.values():
        try:
            hold = holds.read(repo, remote, agent.name)
        except FleetError as e:
            out.agents[agent.name] = {"machine": None, "error": e.message}
            continue
        if hold is None:
            row: dict[str, Any] = {"machine": None, "here": False, "handed_off": False}
        else:
            row = _row(hold, me, repo, remote, place)
            # (held by another machine, or handed off by one: its work is what it published)
            row["elsewhere"] = hold.record.op != "free" and me not in (hold.machine, hold.record.machine)
            if row["elsewhere"] and agent.branch in heads:
                out.published[agent.name] = heads[agent.branch]
        said = rounds.get(agent.name, {})
        tip = fleet.repo.branch_tip(agent.branch)
        there = heads.get(agent.branch)
        if said and not said.get("ok") and said.get("tip") == tip and tip is not None and not (
                there is not None and (there == tip or fleet.repo.is_ancestor(tip, there))):
            row["unpublished"] = said.get("said") or "refused"
        out.agents[agent.name] = row
    return out


def _row(hold: holds.Hold, me: str, repo: Any, remote: str, place: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"machine": hold.machine, "here": hold.machine == me, "handed_off": hold.machine is None,
                           "since": hold.since, "who": _who(repo, remote, hold)}
    if not row["here"]:
        row["heard"] = int(time.time() - first_seen(place / "seen", hold.tip))
    return row


def _who(repo: Any, remote: str, hold: holds.Hold) -> str:
    if hold.machine is None:
        return "handed off"
    said = holds.describe(repo, remote, hold.machine)
    return said[said.index("(") + 1:-1] if "(" in said else hold.machine
