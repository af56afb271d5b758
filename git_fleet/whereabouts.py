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
    else:
        out.stale = machines.unanswered(fleet.repo, remote)
    if not heads:
        heads = machines.known_heads(fleet.repo, remote)
    out.fetched = meeting.fetched_at(place / "fetched")
    me = machines.this(fleet.repo).id
    repo = machines.meeting_repo(fleet.repo)
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
                           "held_since": hold.since, "who": _who(repo, remote, hold)}
    if not row["here"]:
        seen = first_seen(place / "seen", hold.tip)
        row["heard"] = int(time.time() - seen)
        said = holds.reported(repo, hold) if hold.machine is not None else None
        if said is not None:  # (as its hooks reported it there; since when, on this clone's clock)
            row.update(state=said["state"], state_since=int(seen) - int(said["for"]), tool=said.get("tool"),
                       message=said.get("message"), reported=True)
    return row


def _who(repo: Any, remote: str, hold: holds.Hold) -> str:
    if hold.machine is None:
        return "handed off"
    said = holds.describe(repo, remote, hold.machine)
    return said[said.index("(") + 1:-1] if "(" in said else hold.machine


def onto(rows: list[dict[str, Any]], where: Whereabouts | None) -> None:
    """`git fleet-ps` rows (sessions.ps) with where each agent runs; an agent held by another
    machine with its state as that machine last published it, not this clone's tmux."""
    if where is None:
        return
    for row in rows:
        found = where.agents.get(row["agent"], {})
        if found.get("elsewhere"):
            row.update(ELSEWHERE)
        row.update(found)


# what this clone's sessions cannot say of an agent another machine runs (onto), unless that
# machine's beats carry what its hooks report
ELSEWHERE = {"running": None, "since": None, "sandboxed": None, "refused": 0, "reported": False, "state": "elsewhere",
             "state_since": None, "tool": None, "message": None}

