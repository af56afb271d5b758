"""Checkpoint merges: forecast in memory, then integrate agent branches all or nothing.

Every merge is first made in memory (git merge-tree, then commit-tree for the merge commit), and
every commit of every agent since the base is checked against its zone. Only when all of it is
clean does anything visible change, in this order:

1. a journal is written to <common dir>/fleet/merge-journal (what is about to happen);
2. the base ref (and the checkpoint's tag) move in one ref transaction, checked against the old
   values, so a concurrent change of the base makes the merge fail rather than lose work;
3. each work tree that has the base checked out is moved from the old tree to the new one as
   `git merge` would, keeping local changes (refused up front if one would be touched);
4. the checkpoint log gets its line and the journal goes.

A process killed between 2 and 4 leaves a journal; the next fleet command finishes steps 3 and 4
(see recover). Killed before 2, the base is untouched, and the merge objects are unreferenced
loose objects that git's gc removes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import check, plumbing
from .config import Agent, Checkpoint
from .errors import FleetError
from .repo import Repo

JOURNAL = "merge-journal"
LOG = "checkpoints.log"


@dataclass
class Step:
    agent: Agent
    tip: str
    ahead: int
    merged: str | None = None  # the merge commit, when it merged cleanly
    conflicts: dict[str, list[str]] = field(default_factory=dict)  # path -> the other side(s)
    violations: list[check.Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.conflicts and not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent.name, "branch": self.agent.branch, "tip": self.tip, "commits": self.ahead,
            "merge": self.merged, "conflicts": [{"path": p, "with": w} for p, w in self.conflicts.items()],
            "out_of_zone": [{"commit": v.commit, "path": v.path} for v in self.violations],
        }


@dataclass
class Plan:
    base: str
    old: str
    steps: list[Step]
    checkpoint: Checkpoint | None = None
    new: str | None = None
    skipped: list[str] = field(default_factory=list)  # agents with nothing new
    worktrees: list[Path] = field(default_factory=list)  # where the base is checked out
    blocked: dict[str, str] = field(default_factory=dict)  # worktree -> why it cannot be updated

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps) and not self.blocked

    def as_dict(self) -> dict[str, Any]:
        return {
            "base": self.base, "old": self.old, "new": self.new if self.ok else None, "ok": self.ok,
            "checkpoint": self.checkpoint.name if self.checkpoint else None,
            "merges": [s.as_dict() for s in self.steps], "nothing_new": self.skipped,
            "blocked_worktrees": self.blocked,
        }

    def failure(self) -> FleetError:
        names = ", ".join(s.agent.name for s in self.steps)
        what = f"checkpoint {self.checkpoint.name}" if self.checkpoint else f"agents {names}"
        lines = [f"{what} cannot be merged into {self.base}; nothing was changed"]
        hints = []
        for s in self.steps:
            for path, sides in s.conflicts.items():
                lines.append(f"  {s.agent.name}: {path} conflicts with {', '.join(sides)}")
            for v in s.violations:
                lines.append(f"  {s.agent.name}: {(v.commit or '')[:12]} changed {v.path} outside its zone")
        for wt, why in self.blocked.items():
            lines.append(f"  {wt}: local changes would be overwritten: {why}")
        if any(s.conflicts for s in self.steps):
            hints.append("merge those agents at separate checkpoints, or have one of them take the other's "
                         "change first (git fleet-sync)")
        if any(s.violations for s in self.steps):
            hints.append("out-of-zone commits must be rewritten on the agent's branch (git rebase -i)")
        if self.blocked:
            hints.append("commit or stash the local changes in the base's work tree first")
        return FleetError("\n".join(lines), "\n".join(hints) or None)


def _message(agent: Agent, checkpoint: Checkpoint | None, ahead: int) -> str:
    at = f", checkpoint {checkpoint.name}" if checkpoint else ""
    return f"Merge {agent.branch} (agent {agent.name}{at})\n\n{ahead} commit(s) from agent '{agent.name}'.\n"


def plan(repo: Repo, cfg: Any, main: Path, agents: list[Agent], checkpoint: Checkpoint | None = None) -> Plan:
    """Make every merge in memory and check every zone; change nothing visible."""
    old = repo.branch_tip(cfg.base)
    if old is None:
        raise FleetError(f"base branch '{cfg.base}' does not exist", "commit on it first, or fix fleet.base")
    result = Plan(cfg.base, old, [], checkpoint)
    compiled = check.compile_config(str(repo.common_dir), str(main), cfg)
    current = old
    changed: dict[str, set[str]] = {}  # agent -> paths its branch changed since it forked

    def sides_of(path: str, step: Step, earlier: list[Step]) -> list[str]:
        sides = []
        for e in earlier:
            if e.agent.name not in changed:
                fork = repo.merge_base(old, e.tip) or old
                changed[e.agent.name] = repo.changed_paths(fork, e.tip)
            if path in changed[e.agent.name]:
                sides.append(f"agent '{e.agent.name}'")
        fork = repo.merge_base(old, step.tip) or old
        if fork != old and path in repo.changed_paths(fork, old):
            sides.append(f"{cfg.base}")
        return sides or [cfg.base]

    tips: dict[str, str] = {}
    for agent in agents:
        tip = repo.branch_tip(agent.branch)
        if tip is None:
            raise FleetError(f"agent '{agent.name}' has no branch {agent.branch}",
                             f"recreate it, or remove the agent (git fleet-rm {agent.name})")
        tips[agent.name] = tip
    # every agent's new commits, with their paths, from one git log (as status does)
    histories = plumbing.commits_by_tip(tips, [old], str(repo.common_dir))
    merged: list[Step] = []
    for agent in agents:
        tip = tips[agent.name]
        ahead = len(histories[agent.name])
        if ahead == 0:
            result.skipped.append(agent.name)
            continue
        step = Step(agent, tip, ahead)
        step.violations = check.check_history(compiled, compiled.agents[agent.name], histories[agent.name])
        [res] = repo.merge_trees([(current, tip)], cfg.union)
        if res.clean:
            step.merged = repo.commit_tree(res.tree, [current, tip], _message(agent, checkpoint, ahead))
            if step.ok:
                current = step.merged
                merged.append(step)
        else:
            step.conflicts = {p: sides_of(p, step, merged) for p in res.conflicts}
        result.steps.append(step)
    result.new = current if current != old else None
    for wt in repo.worktrees():
        if wt.branch == cfg.base and not wt.bare:
            result.worktrees.append(wt.path)
            if result.new and result.ok:
                why = repo.update_worktree(wt.path, old, result.new, dry_run=True)
                if why:
                    result.blocked[str(wt.path)] = why
    return result


# -- doing it ------------------------------------------------------------------------------------------

def _journal(repo: Repo) -> Path:
    return repo.common_dir / "fleet" / JOURNAL


def _log_line(p: Plan) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    who = ",".join(s.agent.name for s in p.steps)
    name = p.checkpoint.name if p.checkpoint else "-"
    return f"{stamp}\t{name}\t{p.base}\t{p.old}\t{p.new}\t{who}\n"


def _passes(repo: Repo, commit: str, cmd: str, p: Plan) -> tuple[bool, str]:
    env = {**os.environ, "FLEET_BASE": p.base, "FLEET_CHECKPOINT": p.checkpoint.name if p.checkpoint else ""}
    with repo.scratch_worktree(commit) as where:
        proc = subprocess.run(["sh", "-c", cmd], cwd=where, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc.returncode == 0, proc.stdout.decode("utf-8", "replace")


def run_test(repo: Repo, p: Plan) -> None:
    """Run the checkpoint's test on the merged result; when it fails, bisect over the agent merges
    (a merge train) to name the first agent whose merge breaks it."""
    cmd = p.checkpoint.test if p.checkpoint else None
    if not cmd or p.new is None:
        return
    ok, output = _passes(repo, p.new, cmd, p)
    if ok:
        return
    chain = [s.merged for s in p.steps if s.merged]
    lo, hi = 0, len(chain) - 1  # chain[hi] fails; find the first that does
    while lo < hi:
        mid = (lo + hi) // 2
        if _passes(repo, chain[mid], cmd, p)[0]:
            lo = mid + 1
        else:
            hi = mid
    culprit = p.steps[lo].agent
    base_fails = lo == 0 and not _passes(repo, p.old, cmd, p)[0]
    tail = "\n".join("    " + line for line in output.rstrip().splitlines()[-15:])
    assert p.checkpoint is not None
    if base_fails:
        lines = [f"checkpoint {p.checkpoint.name}: `{cmd}` fails on {p.base} already; nothing was changed"]
        hint = f"fix {p.base} first"
    else:
        lines = [f"checkpoint {p.checkpoint.name}: `{cmd}` fails on the merged result; nothing was changed",
                 f"  the first merge that breaks it: agent '{culprit.name}' ({culprit.branch})"]
        hint = f"fix it on {culprit.branch}, or merge the checkpoint without '{culprit.name}'"
    raise FleetError("\n".join(lines + ["  its output ended with:", tail]), hint)


def execute(repo: Repo, p: Plan) -> None:
    """Make the plan real (see the module's docstring for the order and what a crash leaves)."""
    if not p.ok:
        raise p.failure()
    if p.new is None:
        return
    run_test(repo, p)
    ref = f"refs/heads/{p.base}"
    updates = [(ref, p.new, p.old)]
    if p.checkpoint is not None:
        tag_ref = f"refs/tags/{p.checkpoint.tag}"
        if repo.resolve(tag_ref) is not None:
            raise FleetError(f"checkpoint {p.checkpoint.name} was merged already (tag {p.checkpoint.tag} exists)",
                             f"delete the tag to merge it again: git tag -d {p.checkpoint.tag}")
        who = ", ".join(s.agent.name for s in p.steps)
        tag = repo.make_tag(p.checkpoint.tag, p.new, f"Checkpoint {p.checkpoint.name}: {who}")
        updates.append((tag_ref, tag, plumbing.ZERO_OID))
    journal = {"ref": ref, "old": p.old, "new": p.new, "worktrees": [str(w) for w in p.worktrees],
               "log": _log_line(p)}
    path = _journal(repo)
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(journal))
    os.replace(tmp, path)
    _pause("after-journal")
    try:
        repo.update_refs(updates, f"git-fleet: merge {len(p.steps)} agent(s) into {p.base}")
    except FleetError as e:
        path.unlink()
        raise FleetError(f"{p.base} moved while the merge was being prepared; nothing was changed",
                         "run the merge again") from e
    _pause("after-ref")
    _finish(repo, journal)


def _finish(repo: Repo, journal: dict[str, Any]) -> None:
    for wt in journal["worktrees"]:
        if Path(wt).is_dir():
            why = repo.update_worktree(Path(wt), journal["old"], journal["new"])
            if why:
                raise FleetError(f"{wt}: the base moved but its work tree could not follow: {why}",
                                 f"run `git -C {wt} status` and check out {journal['new'][:12]} by hand")
    log = repo.common_dir / "fleet" / LOG
    existing = log.read_text() if log.exists() else ""
    if journal["log"] not in existing:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(journal["log"])
    _journal(repo).unlink(missing_ok=True)


def recover(repo: Repo) -> str | None:
    """Finish a merge whose process was killed after the base moved; say what was done."""
    repo.clean_scratch()
    path = _journal(repo)
    if not path.exists():
        return None
    try:
        journal = json.loads(path.read_text())
    except ValueError:
        path.unlink()
        return None
    now = repo.resolve(journal["ref"])
    if now != journal["new"]:
        path.unlink()  # the ref never moved: nothing to finish
        return None
    _finish(repo, journal)
    return f"finished an interrupted merge into {journal['ref'].removeprefix('refs/heads/')}"


def _pause(point: str) -> None:
    """Tests stop the process here (GIT_FLEET_TEST_PAUSE=point) to kill it at that exact moment."""
    if os.environ.get("GIT_FLEET_TEST_PAUSE") == point:
        marker = os.environ.get("GIT_FLEET_TEST_MARKER")
        if marker:
            Path(marker).write_text(point)
        time.sleep(3600)


# -- the forecast: what would conflict if merged now ---------------------------------------------------

@dataclass
class Forecast:
    base: str
    conflicts: list[tuple[str, str, list[str]]]  # (agent, other agent or the base, paths)
    order: list[str]  # a merge order that integrates the most agents without conflict
    held_back: list[str]  # the agents that order leaves for later

    def as_dict(self) -> dict[str, Any]:
        return {"conflicts": [{"agents": [a, b], "paths": paths} for a, b, paths in self.conflicts],
                "merge_order": self.order, "held_back": self.held_back}


def forecast(repo: Repo, base: str, tips: dict[str, str], union: tuple[str, ...] = ()) -> Forecast:
    """Every agent against the base and every pair of agents against each other, in memory,
    in one `git merge-tree --stdin` process; then the largest conflict-free set, in order."""
    base_tip = repo.branch_tip(base)
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
    conflicts = [(a, b, list(r.conflicts)) for (a, b), r in zip(labels, repo.merge_trees(pairs, union), strict=True) if not r.clean]
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


# -- sync: the base into agent branches ------------------------------------------------------------------

@dataclass
class SyncResult:
    agent: str
    action: str  # "merged", "rebased", "up to date", or "refused"
    why: str = ""


def sync_one(repo: Repo, cfg: Any, agent: Agent, worktree: Path) -> SyncResult:
    """Bring the base's new commits into one agent's branch, or refuse and change nothing."""
    base_tip = repo.branch_tip(cfg.base)
    tip = repo.branch_tip(agent.branch)
    if base_tip is None or tip is None:
        return SyncResult(agent.name, "refused", f"branch {cfg.base if base_tip is None else agent.branch} is missing")
    if repo.merge_base(tip, base_tip) == base_tip:
        return SyncResult(agent.name, "up to date")
    here = os.path.realpath(worktree)
    checked_out = any(os.path.realpath(w.path) == here and w.branch == agent.branch for w in repo.worktrees())
    if checked_out:
        dirty = repo.dirty_paths(worktree)
        if dirty:
            return SyncResult(agent.name, "refused", "uncommitted work in " + ", ".join(dirty[:5]))
    if repo.merge_base(tip, base_tip) == tip:  # nothing of its own: fast-forward, no merge commit
        return _move(repo, agent, worktree if checked_out else None, tip, base_tip, "fast-forwarded", cfg.base)
    shared = repo.is_published(agent.branch)
    if cfg.sync == "rebase" and not shared and checked_out:
        why = repo.rebase(worktree, cfg.base)
        if why:
            return SyncResult(agent.name, "refused", f"rebasing onto {cfg.base} would conflict: {why}")
        return SyncResult(agent.name, "rebased")
    [res] = repo.merge_trees([(tip, base_tip)], cfg.union)
    if not res.clean:
        return SyncResult(agent.name, "refused", f"merging {cfg.base} would conflict in " + ", ".join(res.conflicts))
    new = repo.commit_tree(res.tree, [tip, base_tip], f"Merge {cfg.base} into {agent.branch} (git fleet-sync)\n")
    result = _move(repo, agent, worktree if checked_out else None, tip, new, "merged", cfg.base)
    if cfg.sync == "rebase" and result.action == "merged":
        result.why = "(the branch is published, so it was merged rather than rebased)"
    return result


def _move(repo: Repo, agent: Agent, worktree: Path | None, old: str, new: str, action: str, base: str) -> SyncResult:
    """Move an agent's branch (checked against its old value) and its worktree with it."""
    if worktree is not None:
        why = repo.update_worktree(worktree, old, new, dry_run=True)
        if why:
            return SyncResult(agent.name, "refused", f"untracked files would be overwritten: {why}")
    repo.update_refs([(f"refs/heads/{agent.branch}", new, old)], f"git-fleet: sync {agent.branch} with {base}")
    if worktree is not None:
        repo.update_worktree(worktree, old, new)
    return SyncResult(agent.name, action)
