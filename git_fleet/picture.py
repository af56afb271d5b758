"""The fleet on one screen (git fleet-watch): each agent's state and standing, the conflicts
coming and the merge order, each checkpoint's readiness and why, and the bus.

A Picture is kept between refreshes: `refresh(stale)` computes again only what the named inputs
feed. Commit facts (ahead, behind, out of zone, each pair's merge) are kept by commit id, so a
moved branch tip re-forecasts only the pairs it is in; a worktree's uncommitted paths are kept
until its files or index change ("tree:AGENT"). The JSON is one schema with the other
commands': an agent row has `git fleet-ps --json`'s keys and `git fleet-status --json`'s, with the
same meaning, plus `task`; the whole is status's object plus `checkpoints` and `bus`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import forecast, whereabouts
from .errors import FleetError
from .sessions import Sessions

if TYPE_CHECKING:
    from .bus import Bus, Task
    from .fleet import Fleet
    from .remote_bus import RemoteBus

NEEDS_YOU = "needs you"
# what a refresh may be told is stale, with "tree:AGENT"; READINESS: what no event tells (the main
# worktree's own changes, tags), looked at again on the watch's slow timer
SESSIONS, REFS, BUS, READINESS = "sessions", "refs", "bus", "readiness"
REMOTE = "remote"  # a fleet across machines: what a fetch brought (the bus, the holds, the branches)


class Picture:
    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.memo = forecast.Memo()
        self.bus: Bus | RemoteBus = fleet.bus()
        self._checkpoints: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        self._ps: list[dict[str, Any]] = []
        self._status: dict[str, Any] = {}
        self._ready: list[dict[str, Any]] = []
        self._tasks: list[Task] = []
        self._bus_error: str | None = None

    def refresh(self, stale: set[str] | None = None) -> dict[str, Any]:
        """The picture now; `stale` names what changed since the last refresh (None: anything)."""
        every = stale is None
        stale = stale or set()
        trees = {s.split(":", 1)[1] for s in stale if s.startswith("tree:")}
        for name in list(self.memo.dirty) if every else trees:
            self.memo.dirty.pop(name, None)
        if every or SESSIONS in stale or not self._ps:
            self._ps = Sessions(self.fleet).ps()
        if every or READINESS in stale:
            self._checkpoints = {}
        if every or REFS in stale or READINESS in stale or REMOTE in stale or trees or not self._status:
            self.fleet.forget_worktrees()
            self._status = forecast.status(self.fleet, self.memo)
            self._ready = self._readiness()  # (the tips, read again only when they may have moved)
        if every or BUS in stale or REMOTE in stale:
            self._read_bus()
        return self._gather()

    def _read_bus(self) -> None:
        self.bus.forget()
        try:
            self._tasks, self._bus_error = self.bus.all(), None
        except FleetError as e:
            self._tasks, self._bus_error = [], e.message

    def _gather(self) -> dict[str, Any]:
        standing = {r["agent"]: r for r in self._status.get("agents", [])}
        held = {t.claimed_by: t for t in self._tasks if t.status == "claimed" and t.claimed_by}
        rows = []
        for ps in self._ps:
            mine = standing.get(ps["agent"], {})
            row = {**ps, **(whereabouts.ELSEWHERE if mine.get("elsewhere") else {}), **mine}
            task = held.get(ps["agent"])
            row["task"] = {"id": task.id, "name": task.name, "title": task.title} if task else None
            rows.append(row)
        rows.sort(key=lambda r: r["state"] != NEEDS_YOU)  # (stable: the config's order otherwise)
        return {**self._status, "agents": rows, "checkpoints": self._ready, "bus": self._bus_counts()}

    def _readiness(self) -> list[dict[str, Any]]:
        """Each checkpoint as `git fleet-checkpoint --json` says it, with why it is not ready; the
        same tips give the same answer, so it is kept by them."""
        tips = self.fleet.repo.branch_tips()
        cfg = self.fleet.config
        key = (cfg.base, tips.get(cfg.base, ("", 0))[0],
               *(f"{a.name}={tips.get(a.branch, ('', 0))[0]}" for a in cfg.agents.values()))
        if key not in self._checkpoints:
            try:
                self._checkpoints = {key: forecast.checkpoints(self.fleet, self.memo.dirty)}
            except FleetError as e:
                return [{"checkpoint": None, "state": "unknown", "why": e.message, "agents": []}]
        rows = []
        for cp in self._checkpoints[key]:
            agents = [{**a, "dirty": len(self.memo.dirty[a["agent"]]) if a["agent"] in self.memo.dirty
                       else a["dirty"]} for a in cp["agents"]]
            rows.append({**cp, "agents": agents, "why": why(cp["state"], agents, cp["blocked_worktrees"])})
        return rows

    def _bus_counts(self) -> dict[str, Any]:
        now = time.time()
        counts = {s: sum(1 for t in self._tasks if t.status == s)
                  for s in ("open", "claimed", "done", "failed", "cancelled", "invalid")}
        lapsed = [{"id": t.id, "name": t.name, "agent": t.claimed_by, "expired": int(t.expires or 0)}
                  for t in self._tasks if t.status == "open" and t.claimed_by and t.expires and t.expires < now]
        return {**counts, "lapsed": lapsed, "error": self._bus_error}


def why(state: str, agents: list[dict[str, Any]], worktrees: dict[str, str] | None = None) -> str:
    """Why a checkpoint is as it is, in a line: what blocks it, or what a merge would leave out."""
    reasons = [f"{where}: {what}" for where, what in (worktrees or {}).items()]
    for a in agents:
        if a["conflicts"]:
            reasons.append(f"{a['agent']} would conflict in {', '.join(a['conflicts'])}")
        if a["out_of_zone"]:
            reasons.append(f"{a['agent']} changed {', '.join(a['out_of_zone'])} outside its zone")
    if state == "blocked":
        return "; ".join(reasons) or "a merge would fail"
    if state == "nothing new":
        return "no agent has new commits"
    if state == "merged":
        return "every agent's work is in the base"
    left = [f"{a['agent']} has {a['dirty']} uncommitted" for a in agents if a["dirty"]]
    return "; ".join(left + [f"{a['agent']} has nothing new" for a in agents if not a["ahead"]])


def needing(picture: dict[str, Any]) -> list[str]:
    """The agents that need their person now."""
    return [r["agent"] for r in picture["agents"] if r["state"] == NEEDS_YOU]
