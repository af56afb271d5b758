"""Checkpoint merges: forecast in memory, then integrate agent branches all or nothing.

Every merge is first made in memory (git merge-tree, then commit-tree for the merge commit), and
every commit of every agent since the base is checked against its zone. The checkpoint's test
runs on the result (runner.py: its own process group, a time limit, bounded output). Only when
all of it is clean does anything visible change, holding the fleet's lock, in this order:

1. the base and the work tree that has it checked out are checked again (the test took time);
2. a journal is written to <common dir>/fleet/merge-journal (what is about to happen), fsynced;
3. the base ref and the checkpoint's tag move in one ref transaction, checked against the old
   values, so a concurrent change of the base makes the merge fail rather than lose work;
4. the work tree that has the base checked out is moved from the old tree to the new one as
   `git merge` would, keeping local changes; if a change made in the last moment is in the way,
   the base and the tag are put back instead;
5. the checkpoint log gets its line and the journal goes.

Stop signals wait from 2 to 5. A SIGKILL anywhere leaves the old state, the new one, or a
journal; git itself killed inside its transaction can leave the base moved without the tag,
and lock files. The next fleet command in the main worktree that gets the lock (recover) looks
at the refs and finishes the merge or undoes it, removes only the lock files this merge left,
and says what it did; until then the commit hook refuses commits on the base, which would be
made from the old tree and undo the merge. Killed before 3, the merge objects are unreferenced
loose objects that git's gc removes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import check, config, lock, plumbing, runner
from .config import Agent, Checkpoint
from .errors import FleetError, GitError
from .files import write_atomic
from .pause import pause as _pause
from .plumbing import ZERO_OID, git, read_file
from .repo import Repo, remove_dead_lock

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
    warnings: list[str] = field(default_factory=list)  # from carrying it out

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

@dataclass(frozen=True)
class Journal:
    """What a merge is about to do, written (fsynced) before the base moves: enough for the next
    command to tell which state a killed merge left and to finish it or to undo it."""

    ref: str
    old: str
    new: str
    tag_ref: str | None
    tag: str | None
    log: str
    time: float

    @property
    def base(self) -> str:
        return self.ref.removeprefix("refs/heads/")

    def write(self, repo: Repo) -> None:
        path = _journal(repo)
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, json.dumps(self.__dict__))

    @classmethod
    def read(cls, repo: Repo) -> Journal:
        data = json.loads(_journal(repo).read_text(encoding="utf-8"))
        return cls(**{k: data[k] for k in ("ref", "old", "new", "tag_ref", "tag", "log", "time")})


def _journal(repo: Repo) -> Path:
    return repo.common_dir / "fleet" / JOURNAL


def _log_line(p: Plan) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    who = ",".join(s.agent.name for s in p.steps)
    name = p.checkpoint.name if p.checkpoint else "-"
    return f"{stamp}\t{name}\t{p.base}\t{p.old}\t{p.new}\t{who}\n"


def _test_log(repo: Repo) -> Path:
    return repo.common_dir / "fleet" / "checkpoint-test.log"


def _attempt(repo: Repo, commit: str, p: Plan, log: Path | None = None) -> runner.Outcome:
    assert p.checkpoint is not None and p.checkpoint.test is not None
    with repo.scratch_worktree(commit) as where:
        env = {**repo.env_for(where), "FLEET_BASE": p.base, "FLEET_CHECKPOINT": p.checkpoint.name}
        return runner.run(p.checkpoint.test, where, env, p.checkpoint.timeout, log)


def _ended_with(outcome: runner.Outcome) -> list[str]:
    lines = ["  its output ended with:", *("    " + line for line in outcome.tail)] if outcome.tail else ["  it printed nothing"]
    if outcome.log is not None and outcome.log.exists():
        lines.append(f"  all of its output: {outcome.log}")
    return lines


def run_test(repo: Repo, p: Plan) -> None:
    """Run the checkpoint's test on the merged result, within its time limit; when it fails,
    bisect over the agent merges (a merge train) to name the first agent whose merge breaks it."""
    if p.checkpoint is None or not p.checkpoint.test or p.new is None:
        return
    cp, cmd = p.checkpoint, p.checkpoint.test
    first = _attempt(repo, p.new, p, _test_log(repo))
    if first.ok:
        return
    if first.timed_out:
        raise FleetError("\n".join([(f"checkpoint {cp.name}: `{cmd}` did not finish within {config.format_duration(cp.timeout)}"
                                    " on the merged result; it was stopped and nothing was changed"), *_ended_with(first)]),
                         f"make it faster, or give it longer: timeout = \"...\" in [checkpoints.{cp.name}]")
    chain = [s.merged for s in p.steps if s.merged]
    lo, hi = 0, len(chain) - 1  # chain[hi] fails; find the first that does
    while lo < hi:
        mid = (lo + hi) // 2
        if _attempt(repo, chain[mid], p).ok:
            lo = mid + 1
        else:
            hi = mid
    culprit = p.steps[lo].agent
    base_fails = lo == 0 and not _attempt(repo, p.old, p).ok
    if base_fails:
        lines = [f"checkpoint {cp.name}: `{cmd}` fails on {p.base} already; nothing was changed"]
        hint = f"fix {p.base} first"
    else:
        lines = [f"checkpoint {cp.name}: `{cmd}` fails on the merged result; nothing was changed",
                 f"  the first merge that breaks it: agent '{culprit.name}' ({culprit.branch})"]
        hint = f"fix it on {culprit.branch}, or merge the checkpoint without '{culprit.name}'"
    raise FleetError("\n".join(lines + _ended_with(first)), hint)


def _recheck(repo: Repo, p: Plan) -> None:
    """What may have changed while the test ran: the base itself, and the work tree that has it
    checked out (only the paths the merge touches matter: git's two-way merge rules)."""
    assert p.new is not None
    if repo.ref_value(f"refs/heads/{p.base}") != p.old:
        raise FleetError(f"{p.base} moved while the merge was being prepared; nothing was changed", "run the merge again")
    where = repo.checked_out(p.base)
    if where is not None:
        why = repo.update_worktree(where, p.old, p.new, dry_run=True)
        if why:
            raise FleetError(f"{where}: local changes would be overwritten by the merge: {why}\nnothing was changed",
                             "commit or stash them, then run the merge again")


def execute(repo: Repo, p: Plan) -> list[str]:
    """Make the plan real (see the module's docstring for the order and what a crash leaves);
    returns warnings."""
    if not p.ok:
        raise p.failure()
    if p.new is None:
        return []
    with runner.stoppable():
        run_test(repo, p)
    _recheck(repo, p)
    ref = f"refs/heads/{p.base}"
    tag_ref = tag = None
    if p.checkpoint is not None:
        tag_ref = f"refs/tags/{p.checkpoint.tag}"
        if repo.ref_value(tag_ref) is not None:
            raise FleetError(f"checkpoint {p.checkpoint.name} was merged already (tag {p.checkpoint.tag} exists)",
                             f"delete the tag to merge it again: git tag -d {p.checkpoint.tag}")
        who = ", ".join(s.agent.name for s in p.steps)
        tag = repo.make_tag(p.checkpoint.tag, p.new, f"Checkpoint {p.checkpoint.name}: {who}")
    j = Journal(ref, p.old, p.new, tag_ref, tag, _log_line(p), time.time())
    with runner.deferred() as arrived:  # from here on a signal waits until the base is old or new again
        j.write(repo)
        _pause("after-journal")
        updates = [(ref, p.new, p.old)] + ([(tag_ref, tag, ZERO_OID)] if tag_ref and tag else [])
        try:
            repo.update_refs(updates, f"git-fleet: merge {len(p.steps)} agent(s) into {p.base}")
        except GitError as e:
            _after_failed_update(repo, j, e)  # raises unless the base did move
        _pause("after-ref")
        warnings = _finish(repo, j)
    if arrived:
        warnings.append(f"{' and '.join(arrived)} arrived while {p.base} was moving; the merge was finished first")
    return warnings


def _after_failed_update(repo: Repo, j: Journal, err: GitError) -> None:
    """The ref transaction failed. git may have been killed between its renames, so look at what
    it did: if the base moved, the merge goes on (_finish makes what is missing); if not,
    nothing changed, and the error says why (a stale lock is named, never removed blindly)."""
    if repo.ref_value(j.ref) == j.new:
        return
    others = _clear_locks(repo, j)
    if j.tag_ref and j.tag and repo.ref_value(j.tag_ref) == j.tag:
        repo.update_refs([(j.tag_ref, ZERO_OID, j.tag)], "git-fleet: undo a half-made checkpoint tag")
    _journal(repo).unlink()
    if others:
        raise FleetError(f"cannot move {j.base}; nothing was changed:\n" + "\n".join(others),
                         "if no git process is running in this repository, remove the lock file(s), then merge again")
    if repo.ref_value(j.ref) != j.old:
        raise FleetError(f"{j.base} moved while the merge was being prepared; nothing was changed", "run the merge again")
    raise FleetError(f"cannot move {j.base}: {err.message}\nnothing was changed")


def _finish(repo: Repo, j: Journal, recovering: bool = False) -> list[str]:
    """The base has moved to j.new: make the checkpoint tag if the transaction was cut short, bring
    the work tree that has the base checked out along (or put the base back, if local changes
    made since it was checked no longer let it follow), log, and drop the journal."""
    warnings = _clear_locks(repo, j)
    if j.tag_ref and j.tag and repo.ref_value(j.tag_ref) != j.tag:
        try:
            repo.update_refs([(j.tag_ref, j.tag, ZERO_OID)], "git-fleet: checkpoint tag")
        except GitError as e:
            warnings.append(f"could not make the checkpoint tag {j.tag_ref.removeprefix('refs/tags/')}: {e.message}")
    where = repo.checked_out(j.base)
    if where is not None:
        adopted = repo.adopt_written(where, j.old, j.new) if recovering else []
        why = repo.update_worktree(where, j.old, j.new)
        if why:
            if adopted:  # put back what the killed update had written, before the base goes back
                repo.update_worktree(where, j.new, j.old)
            return warnings + _roll_back(repo, j, where, why, recovering)
    log = repo.common_dir / "fleet" / LOG
    existing = log.read_text(encoding="utf-8") if log.exists() else ""
    if j.log not in existing:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(j.log)
            fh.flush()
            os.fsync(fh.fileno())
    _journal(repo).unlink()
    return warnings


def _roll_back(repo: Repo, j: Journal, where: Path, why: str, recovering: bool) -> list[str]:
    """Put the base (and the tag) back where they were, checked against where the merge put them."""
    updates = [(j.ref, j.old, j.new)] + ([(j.tag_ref, ZERO_OID, j.tag)] if j.tag_ref and j.tag else [])
    try:
        repo.update_refs(updates, "git-fleet: undo a merge its work tree could not follow")
    except GitError:
        _journal(repo).unlink()
        raise FleetError(f"{j.base} moved to {j.new[:12]}, but {where} could not follow it ({why}), and {j.base} has "
                         "moved on since, so it cannot be put back",
                         f"look at `git -C {where} status`; `git -C {where} read-tree -m -u {j.old[:12]} {j.new[:12]}` "
                         "brings the work tree along once the changes in the way are set aside") from None
    _journal(repo).unlink()
    message = (f"{where}: the work tree changed during the merge and cannot follow it ({why}); "
               f"{j.base} was put back to {j.old[:12]}: nothing was changed")
    hint = "commit or stash those changes, then run the merge again"
    if recovering:
        return [message, hint]
    raise FleetError(message, hint)


def _clear_locks(repo: Repo, j: Journal) -> list[str]:
    """Remove the lock files a killed git process of this merge left, and only those (see
    repo.remove_dead_lock): ref locks holding j.new or j.tag; HEAD's lock (taken for HEAD's reflog,
    as HEAD points at the base) and the index lock of the work tree that follows the base, made
    after the journal. Any other lock is reported, not removed: it may be a live command's."""
    found = []
    for ref, mine in ((j.ref, j.new), (j.tag_ref, j.tag)):
        if ref and mine:
            found.append((repo.common_dir / f"{ref}.lock", mine))
    head = repo.common_dir / "HEAD"
    if (read_file(str(head)) or "") == f"ref: {j.ref}":
        found.append((repo.common_dir / "HEAD.lock", ""))
    where = repo.checked_out(j.base)
    if where is not None:  # the index of the work tree the merge updates (git read-tree killed)
        found.append((Path(git(["rev-parse", "--path-format=absolute", "--git-path", "index.lock"], where)
                           .stdout.decode().strip()), ""))
    return [f"  {lock_file} exists: another git process holds it, or one was killed"
            for lock_file, mine in found if remove_dead_lock(lock_file, mine, j.time) is False]


def recover(repo: Repo, orchestrator: bool) -> list[str]:
    """Before a command does anything else: finish (or undo) a merge whose process was killed,
    and remove scratch worktrees killed merges left. Only from the main worktree, and only when
    the fleet's lock is free (a merge that holds it is running, not killed); elsewhere it only
    says that a merge needs finishing. Never fails: every outcome is a state that works."""
    journal = _journal(repo)
    scratch = repo.common_dir / "fleet" / "scratch"
    leftovers = scratch.is_dir() and any(scratch.iterdir())
    if not journal.exists() and not leftovers:
        return []
    with lock.attempt(repo.common_dir) as free:
        if not free:
            return []
        if not orchestrator:
            main = repo.main_worktree
            return [(f"a checkpoint merge was interrupted; the next git fleet command in the main worktree ({main}) "
                    "finishes it")] if journal.exists() else []
        if leftovers:
            repo.clean_scratch()
        if not journal.exists():
            return []
        try:
            j = Journal.read(repo)
        except (OSError, ValueError, KeyError, TypeError) as e:
            aside = journal.with_name(JOURNAL + ".unreadable")
            os.replace(journal, aside)
            return [f"the journal of an interrupted checkpoint merge cannot be read ({e}); it was moved to {aside}",
                    "check the base branch (git log -3) and the main worktree (git status) by hand"]
        try:
            return _recover(repo, j)
        except FleetError as e:
            return [e.message] + ([e.hint] if e.hint else [])


def _recover(repo: Repo, j: Journal) -> list[str]:
    now = repo.ref_value(j.ref)
    if now == j.old:  # killed before the base moved: nothing to finish
        warnings = _clear_locks(repo, j)
        if j.tag_ref and j.tag and repo.ref_value(j.tag_ref) == j.tag:
            repo.update_refs([(j.tag_ref, ZERO_OID, j.tag)], "git-fleet: undo a half-made checkpoint tag")
        _journal(repo).unlink()
        return [f"an interrupted merge into {j.base} had not moved it: nothing was changed"] + warnings
    if now == j.new:
        warnings = _finish(repo, j, recovering=True)
        if repo.ref_value(j.ref) == j.old:
            return warnings  # it was put back: _roll_back said why
        return [f"finished an interrupted merge into {j.base}"] + warnings
    if now is not None and repo.is_ancestor(j.new, now):
        # the base moved past the merge before this command ran (a commit made with --no-verify,
        # a plain `git merge`): its work tree is wherever that left it, so only the rest is done
        warnings = _clear_locks(repo, j)
        if j.tag_ref and j.tag and repo.ref_value(j.tag_ref) is None:
            repo.update_refs([(j.tag_ref, j.tag, ZERO_OID)], "git-fleet: checkpoint tag")
        undone = sorted(repo.changed_paths(j.old, j.new) - repo.changed_paths(j.old, now))
        _journal(repo).unlink()
        message = (f"an interrupted merge had moved {j.base} to {j.new[:12]}, and {j.base} moved on to {now[:12]} "
                   "before its work tree was brought along")
        if not undone:
            return [message]
        shown = " ".join(undone[:5]) + (f" and {len(undone) - 5} more" if len(undone) > 5 else "")
        return [f"{message}: {now[:12]} undoes the merge's changes to {shown}",
                (f"see `git diff {j.new[:12]} {now[:12]}`; `git restore --source={j.new[:12]} --staged --worktree -- PATH` "
                "brings the merged version of a path back")]
    # moved somewhere that does not hold the merge: it did not land
    warnings = _clear_locks(repo, j)
    if j.tag_ref and j.tag and repo.ref_value(j.tag_ref) == j.tag:
        repo.update_refs([(j.tag_ref, ZERO_OID, j.tag)], "git-fleet: the checkpoint did not land")
    _journal(repo).unlink()
    return [(f"an interrupted merge into {j.base} had been overtaken: {j.base} is at {(now or 'nothing')[:12]}, "
            f"which does not hold the merge ({j.new[:12]}); merge the checkpoint again")] + warnings


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


def sync_one(repo: Repo, cfg: Any, agent: Agent) -> SyncResult:
    """Bring the base's new commits into one agent's branch, or refuse and change nothing. The
    work tree that moves with the branch is wherever git has the branch checked out (a worktree
    moved by hand included), never a path worked out from the configuration."""
    base_tip = repo.branch_tip(cfg.base)
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
    shared = repo.is_published(agent.branch)
    if cfg.sync == "rebase" and not shared and worktree is not None:
        why = repo.rebase(worktree, cfg.base)
        if why:
            return SyncResult(agent.name, "refused", f"rebasing onto {cfg.base} would conflict: {why}")
        return SyncResult(agent.name, "rebased")
    [res] = repo.merge_trees([(tip, base_tip)], cfg.union)
    if not res.clean:
        return SyncResult(agent.name, "refused", f"merging {cfg.base} would conflict in " + ", ".join(res.conflicts))
    new = repo.commit_tree(res.tree, [tip, base_tip], f"Merge {cfg.base} into {agent.branch} (git fleet-sync)\n")
    result = _move(repo, agent, worktree, tip, new, "merged", cfg.base)
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
