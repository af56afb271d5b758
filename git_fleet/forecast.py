"""What is coming: each agent's standing against the base (ahead, behind, dirty, out of zone), the
conflicts a merge now would meet (every agent against the base and every pair, in memory), the
merge order that integrates the most, and each declared checkpoint's readiness."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import check, durable, lost_journal, merge, whereabouts
from .gateway import plumbing
from .gateway.repo import Repo

if TYPE_CHECKING:
    from .fleet import Fleet

FACTS = "facts.json"  # in $GIT_COMMON_DIR/fleet/: the commit facts the last status used


@dataclass
class Forecast:
    base: str
    conflicts: list[tuple[str, str, list[str]]]  # (agent, other agent or the base, paths)
    order: list[str]  # a merge order that integrates the most agents without conflict
    held_back: list[str]  # the agents that order leaves for later

    def as_dict(self) -> dict[str, Any]:
        return {"conflicts": [{"agents": [a, b], "paths": paths} for a, b, paths in self.conflicts],
                "merge_order": self.order, "held_back": self.held_back}


@dataclass
class Memo:
    """What status found, kept by a caller that asks again (the watch) so that only what changed is
    computed again: facts of commits, which never change, by their ids; each worktree's
    uncommitted paths until the caller drops them (its files or index changed)."""
    pairs: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (ours, theirs) -> conflicting paths
    standing: dict[tuple[str, str], tuple[int, int, list[str]]] = field(default_factory=dict)  # (tip, base tip)
    dirty: dict[str, list[str]] = field(default_factory=dict)  # agent -> uncommitted paths
    asked: set[tuple[str, str]] = field(default_factory=set)  # the keys the last status used


    @classmethod
    def kept(cls, fleet: Fleet) -> Memo:
        """The facts the last status kept ($GIT_COMMON_DIR/fleet/facts.json): commit facts, true
        for as long as the commits exist; those that depend on the zones or the union merge kept
        only while they are the same. Shown to the person, never a gate: a merge computes its own."""
        memo = cls()
        try:
            data = json.loads((fleet.repo.common_dir / "fleet" / FACTS).read_bytes())
            if data.get("version") == 1 and data.get("union") == list(fleet.config.union):
                memo.pairs = {(str(a), str(b)): [str(p) for p in paths] for a, b, paths in data["pairs"]}
                if data.get("zones") == _zones_key(fleet):
                    memo.standing = {(str(t), str(b)): (int(x), int(y), [str(p) for p in out])
                                     for t, b, x, y, out in data["standing"]}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return cls()  # (none yet, or not readable: computed again)
        return memo

    def keep(self, fleet: Fleet, used: Memo) -> None:
        """Keep the facts `used` this time, if they differ from what was kept (self)."""
        if used.pairs == self.pairs and used.standing == self.standing:
            return
        data = {"version": 1, "union": list(fleet.config.union), "zones": _zones_key(fleet),
                "pairs": [[a, b, p] for (a, b), p in used.pairs.items()],
                "standing": [[t, b, *v] for (t, b), v in used.standing.items()]}
        with contextlib.suppress(OSError):  # (a repository this user cannot write, a sandbox's view: computed again)
            durable.replace(fleet.repo.common_dir / "fleet" / FACTS, json.dumps(data))


def _zones_key(fleet: Fleet) -> str:
    """What the facts about zones depend on: the fleet's configuration, and the repository's (the
    hooks' path is protected), as the zone cache is keyed."""
    try:
        git_config = (fleet.repo.common_dir / "config").read_bytes()
    except OSError:
        git_config = b""
    return hashlib.sha256(fleet.text.encode() + b"\0" + git_config).hexdigest()


def forecast(repo: Repo, base: str, tips: dict[str, str], union: tuple[str, ...] = (),
             memo: Memo | None = None, base_tip: str | None = None) -> Forecast:
    """Every agent against the base and every pair of agents against each other, in memory,
    in one `git merge-tree --stdin` process (only the pairs `memo` does not know); then the
    largest conflict-free set, in order."""
    memo = memo if memo is not None else Memo()
    base_tip = base_tip or repo.branch_tip(base)
    names = list(tips)
    pairs: list[tuple[str, str]] = []
    labels: list[tuple[str, str]] = []
    if base_tip is not None:
        for n in names:
            pairs.append((base_tip, tips[n]))
            labels.append((n, base))
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pairs.append((tips[a], tips[b]))
            labels.append((a, b))
    new = list(dict.fromkeys(p for p in pairs if p not in memo.pairs))
    for pair, r in zip(new, repo.merge_trees(new, union), strict=True):
        memo.pairs[pair] = [] if r.clean else list(r.conflicts)
    memo.asked.update(pairs)
    conflicts = [(a, b, memo.pairs[pair]) for (a, b), pair in zip(labels, pairs, strict=True) if memo.pairs[pair]]
    against_base = {a for a, b, _ in conflicts if b == base}
    edges = {(a, b) for a, b, _ in conflicts if b != base}
    candidates = [n for n in names if n not in against_base]
    best: list[str] = []
    # at most 10 agents: trying every subset (largest first) is instant and exact
    for mask in range(1 << len(candidates)):
        chosen = [c for i, c in enumerate(candidates) if mask >> i & 1]
        if len(chosen) > len(best) and not any((a, b) in edges for a in chosen for b in chosen):
            best = chosen
    return Forecast(base, conflicts, best, [n for n in names if n not in best])


def status(fleet: Fleet, memo: Memo | None = None, *, fetch: bool = False) -> dict[str, Any]:
    """One row per agent (ahead, behind, dirty, out of zone, last commit) and the forecast; what
    `memo` knows is not computed again, and what is computed is kept there. Without a memo, the
    commit facts the last status kept are used, and what this one used is kept (Memo.kept)."""
    if memo is None:
        kept = Memo.kept(fleet)
        used = Memo(pairs=dict(kept.pairs), standing=dict(kept.standing))
        found = status(fleet, used, fetch=fetch)
        used.pairs = {k: v for k, v in used.pairs.items() if k in used.asked}
        used.standing = {k: v for k, v in used.standing.items() if k in used.asked}
        kept.keep(fleet, used)
        return found
    cfg = fleet.config
    compiled = check.compile_config(str(fleet.repo.common_dir), str(fleet.main), cfg)
    all_tips = fleet.repo.branch_tips()
    base_tip = all_tips[cfg.base][0] if cfg.base in all_tips else None
    branch_tips = {a.name: all_tips.get(a.branch, (None, 0))[0] for a in cfg.agents.values()}
    where = whereabouts.look(fleet, fetch)
    elsewhere = {name for name, w in (where.agents if where else {}).items() if w.get("elsewhere")}
    branch_tips.update({name: (where.published.get(name) if where else None) for name in elsewhere})
    found = {a: t for a, t in branch_tips.items() if t is not None and (t, base_tip) not in memo.standing}
    # the slow parts are git processes that do not depend on each other: `git status` of each
    # worktree and the one `git log` of the zone check run side by side
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        located = {a.name: fleet.locate(a) if a.name not in elsewhere else None for a in cfg.agents.values()}
        dirty_jobs = {name: pool.submit(fleet.repo.dirty_paths, where) for name, where in located.items()
                      if where is not None and where.is_dir() and name not in memo.dirty}
        histories = (plumbing.commits_by_tip(found, [base_tip], str(fleet.repo.common_dir))
                     if base_tip and found else {})
        memo.dirty.update({name: job.result() for name, job in dirty_jobs.items()})
    for name, history in histories.items():
        ahead, behind = fleet.repo.pygit.ahead_behind(found[name], str(base_tip))
        bad = check.check_history(compiled, compiled.agents[name], history)
        memo.standing[(found[name], str(base_tip))] = (int(ahead), int(behind), sorted({v.path for v in bad}))
    rows, tips = [], {}
    for a in cfg.agents.values():
        tip = branch_tips[a.name]
        row: dict[str, Any] = {"agent": a.name, "branch": a.branch, "ahead": None, "behind": None,
                               "dirty": None, "out_of_zone": [], "last_commit": None}
        if where is not None:
            row.update(where.agents.get(a.name, {}), published=a.name in elsewhere)
        if tip is not None:
            row["last_commit"] = all_tips[a.branch][1] if a.name not in elsewhere else fleet.repo.commit_time(tip)
            if base_tip is not None:
                memo.asked.add((tip, base_tip))
                row["ahead"], row["behind"], out = memo.standing[(tip, base_tip)]
                row["out_of_zone"] = list(out)
            if row["ahead"]:
                tips[a.name] = tip
        if a.name in memo.dirty and located[a.name] is not None:
            dirty = memo.dirty[a.name]
            row["dirty"] = len(dirty)
            zone = compiled.agents[a.name]
            row["out_of_zone"] += sorted(p for p in dirty if not zone.owns(p) or compiled.is_protected(p))
        rows.append(row)
    fc = forecast(fleet.repo, cfg.base, tips, cfg.union, memo, base_tip)
    return {"base": cfg.base, "agents": rows, **fc.as_dict(), **({"remote": where.as_dict()} if where else {})}


def checkpoints(fleet: Fleet, dirty: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """Each checkpoint with its agents' readiness: ahead, dirty, out of zone, would conflict;
    `dirty` gives the uncommitted paths already known. Refused while the journal of an interrupted
    move cannot be read: readiness would be a guess."""
    dirty = dirty or {}
    lost_journal.refuse_unreadable(fleet.repo, fleet.config.base)
    rows = []
    for cp in fleet.config.checkpoints.values():
        p = merge.prepare(fleet.repo, fleet.config, fleet.main, [fleet.config.agents[a] for a in cp.agents], cp)
        steps = {s.agent.name: s for s in p.steps}
        agents = []
        for name in cp.agents:
            a = fleet.config.agents[name]
            s = steps.get(name)
            where = fleet.locate(a)
            uncommitted = (len(dirty[name]) if name in dirty else len(fleet.repo.dirty_paths(where))) \
                if where is not None and where.is_dir() else None
            agents.append({"agent": name, "ahead": s.ahead if s else 0, "dirty": uncommitted,
                           "out_of_zone": [v.path for v in s.violations] if s else [],
                           "conflicts": list(s.conflicts) if s else []})
        # one answer with `git fleet-merge --checkpoint` (-n or not): the same batch says it
        state = ("blocked" if not p.ok else "ready" if p.new else "merged" if p.rounds else "nothing new")
        rows.append({"checkpoint": cp.name, "state": state, "test": cp.test, "agents": agents,
                     "rounds": p.rounds, "tag": cp.tag(p.rounds) if p.rounds else None,
                     "blocked_worktrees": dict(p.blocked)})
    return rows

