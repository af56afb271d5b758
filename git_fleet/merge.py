"""Checkpoint merges: integrate agent branches into the base, all or nothing, round after round.

Every merge is first made in memory (git merge-tree, then commit-tree for the merge commit), and
every commit of every agent since the base is checked against its zone. The checkpoint's test
runs on the result (runner.py: under a keeper, within a time limit, output bounded). Only when
all of it is clean does the base move, with the work tree that has it checked out, and the
checkpoint's tag: moves.py says how, and what a process killed at any moment leaves. Killed
before that, the merge objects are unreferenced loose objects that git's gc removes.
"""

from __future__ import annotations

import re
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import check, config, lost_journal, merge_remote, moves, runner, sandbox, sandbox_layout
from .config import Agent, Checkpoint, Config
from .errors import FleetError, UsageError
from .gateway import plumbing
from .gateway.repo import Repo

if TYPE_CHECKING:
    from .fleet import Fleet


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
class Batch:
    """The agents merged together, all or nothing: what each merge gives, and whether it may land."""

    base: str
    old: str
    steps: list[Step]
    checkpoint: Checkpoint | None = None
    new: str | None = None
    skipped: list[str] = field(default_factory=list)  # agents with nothing new
    worktrees: list[Path] = field(default_factory=list)  # where the base is checked out
    blocked: dict[str, str] = field(default_factory=dict)  # worktree -> why it cannot be updated
    rounds: int = 0  # rounds of the checkpoint merged so far (its tags); this merge is the next
    warnings: list[str] = field(default_factory=list)  # from carrying it out
    across: merge_remote.Across | None = None  # a fleet across machines: the remote's side
    sandbox_ports: tuple[int, ...] | None = None  # the test runs sandboxed (an agent merged runs so): its ports

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps) and not self.blocked

    def as_dict(self) -> dict[str, Any]:
        return {
            "base": self.base, "old": self.old, "new": self.new if self.ok else None, "ok": self.ok,
            "checkpoint": self.checkpoint.name if self.checkpoint else None,
            "round": self.rounds + 1 if self.checkpoint and self.new else None,
            "tag": self.checkpoint.tag(self.rounds + 1) if self.checkpoint and self.new else None,
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
                lines.append(f"  {s.agent.name}: {check.quote(path)} conflicts with {', '.join(sides)}")
            for v in s.violations:
                if v.what == "carried into":
                    lines.append(f"  {s.agent.name}: the merge would change {check.quote(v.path)}, outside its zone "
                                 "(git carried the agent's change there: a path the base moved?)")
                else:
                    lines.append(f"  {s.agent.name}: {(v.commit or '')[:12]} changed {check.quote(v.path)} outside its zone")
        for wt, why in self.blocked.items():
            lines.append(f"  {wt}: local changes would be overwritten: {why}")
        if any(s.conflicts for s in self.steps):
            hints.append("merge those agents at separate checkpoints, or have one of them take the other's "
                         "change first (git fleet-sync)")
        if any(v.what != "carried into" for s in self.steps for v in s.violations):
            hints.append("out-of-zone commits must be rewritten on the agent's branch (git rebase -i)")
        if any(v.what == "carried into" for s in self.steps for v in s.violations):
            hints.append("the agent's work lands on a path the base moved out of its zone: widen its zone "
                         "(git fleet-set AGENT --zone ...), or leave the change to that path's owner")
        if self.blocked:
            hints.append("commit or stash the local changes in the base's work tree first")
        return FleetError("\n".join(lines), "\n".join(hints) or None)


def _message(agent: Agent, checkpoint: Checkpoint | None, ahead: int) -> str:
    at = f", checkpoint {checkpoint.name}" if checkpoint else ""
    return f"Merge {agent.branch} (agent {agent.name}{at})\n\n{ahead} commit(s) from agent '{agent.name}'.\n"


def rounds(repo: Repo, checkpoint: Checkpoint) -> int:
    """How many rounds of the checkpoint were merged: the highest N of its tags (fleet/NAME is 1)."""
    done = 0
    for tag in repo.tags_under(f"fleet/{checkpoint.name}"):
        rest = tag[len(f"fleet/{checkpoint.name}"):]
        if rest == "":
            done = max(done, 1)
        elif m := re.fullmatch(r"@([1-9][0-9]{0,5})", rest, re.ASCII):  # (a tag made by hand is no round)
            done = max(done, int(m.group(1)))
    return done


def prepare(repo: Repo, cfg: Config, main: Path, agents: list[Agent], checkpoint: Checkpoint | None = None,
            published: dict[str, str] | None = None) -> Batch:
    """Make every merge in memory and check every zone; change nothing visible. `published`:
    agents merged at these tips (as another machine published them), not their branches here."""
    old = repo.branch_tip(cfg.base)
    if old is None:
        raise FleetError(f"base branch '{cfg.base}' does not exist", "commit on it first, or fix fleet.base")
    result = Batch(cfg.base, old, [], checkpoint, rounds=rounds(repo, checkpoint) if checkpoint else 0)
    compiled = check.compile_config(str(repo.common_dir), str(main), cfg)
    current = old
    changed: dict[str, set[str]] = {}  # agent -> paths its branch changed since it forked
    tips = {**_tips(repo, [a for a in agents if a.name not in (published or {})]), **(published or {})}
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
            if not step.violations:
                # what the merge changes in the base, not only what the agent's commits changed: git
                # carries an edit of the agent's file to wherever the base moved it (a rename)
                carried = [("carried into", p) for p in sorted(repo.changed_paths(current, step.merged))]
                step.violations = check.check_paths(compiled, compiled.agents[agent.name], carried, step.merged)
            if step.ok:
                current = step.merged
                merged.append(step)
        else:
            step.conflicts = {p: _sides_of(repo, cfg.base, old, p, step, merged, changed) for p in res.conflicts}
        result.steps.append(step)
    result.new = current if current != old else None
    _base_worktrees(repo, result)
    return result


def _tips(repo: Repo, agents: list[Agent]) -> dict[str, str]:
    """Each agent's branch tip; refused where an agent has no branch."""
    tips: dict[str, str] = {}
    for agent in agents:
        tip = repo.branch_tip(agent.branch)
        if tip is None:
            raise FleetError(f"agent '{agent.name}' has no branch {agent.branch}",
                             f"recreate it, or remove the agent (git fleet-rm {agent.name})")
        tips[agent.name] = tip
    return tips


def _sides_of(repo: Repo, base: str, old: str, path: str, step: Step, earlier: list[Step],
              changed: dict[str, set[str]]) -> list[str]:
    """What the step's merge conflicts with on `path`: the agents merged before it that changed it
    too, and the base where it changed since the agent forked; the base when neither did.
    `changed`: the paths each agent's branch changed since it forked, filled in as needed."""
    sides = []
    for e in earlier:
        if e.agent.name not in changed:
            fork = repo.merge_base(old, e.tip) or old
            changed[e.agent.name] = repo.changed_paths(fork, e.tip)
        if path in changed[e.agent.name]:
            sides.append(f"agent '{e.agent.name}'")
    fork = repo.merge_base(old, step.tip) or old
    if fork != old and path in repo.changed_paths(fork, old):
        sides.append(f"{base}")
    return sides or [base]


def _base_worktrees(repo: Repo, result: Batch) -> None:
    """Where the base is checked out, and, if the batch would move it, why a work tree there cannot
    follow (local changes the move would overwrite)."""
    for wt in repo.worktrees():
        if wt.branch == result.base and not wt.bare:
            result.worktrees.append(wt.path)
            if result.new and result.ok:
                why = repo.can_follow(wt.path, result.old, result.new)
                if why:
                    result.blocked[str(wt.path)] = why


# -- doing it ------------------------------------------------------------------------------------------

def _log_line(p: Batch) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    who = ",".join(s.agent.name for s in p.steps)
    name = p.checkpoint.name if p.checkpoint else "-"
    round_ = str(p.rounds + 1) if p.checkpoint else "-"
    return f"{stamp}\t{name}\t{p.base}\t{p.old}\t{p.new}\t{who}\t{round_}\n"


def _test_log(repo: Repo) -> Path:
    return repo.common_dir / "fleet" / "checkpoint-test.log"


def _attempt(repo: Repo, commit: str, p: Batch, what: str, log: Path | None = None) -> runner.Outcome:
    """The checkpoint's test on `commit` (`what` it is, for messages); a test that did not finish
    (its time was up, or its keeper was killed) stops the merge there, with nothing changed."""
    cp = p.checkpoint
    assert cp is not None and cp.test is not None
    with repo.scratch_worktree(commit) as where, tempfile.TemporaryDirectory(prefix="fleet-test-") as tmp:
        env = {**repo.env_in(where), "FLEET_BASE": p.base, "FLEET_CHECKPOINT": cp.name}
        command = cp.test
        if p.sandbox_ports is not None:  # agents' code, confined to its scratch worktree (and a temporary directory)
            env["TMPDIR"] = tmp
            command = shlex.join(sandbox.command(["/bin/sh", "-c", cp.test], [str(where), tmp], list(p.sandbox_ports)))
        outcome = runner.run(command, where, env, cp.timeout, log)
    if outcome.keeper_killed:
        raise FleetError("\n".join([f"checkpoint {cp.name}: `{cp.test}` on {what} was stopped: the process that kept "
                                    "it was killed; nothing was changed", *_ended_with(outcome)]), "merge again")
    if outcome.timed_out:
        raise FleetError("\n".join([(f"checkpoint {cp.name}: `{cp.test}` did not finish within "
                                     f"{config.format_duration(cp.timeout)} on {what}; it was stopped and nothing was "
                                     "changed"), *_ended_with(outcome)]),
                         f"make it faster, or give it longer: timeout = \"...\" in [checkpoints.{cp.name}]")
    return outcome


def _ended_with(outcome: runner.Outcome) -> list[str]:
    lines = ["  its output ended with:", *("    " + line for line in outcome.tail)] if outcome.tail else ["  it printed nothing"]
    if outcome.log is not None and outcome.log.exists():
        lines.append(f"  all of its output: {outcome.log}")
    return lines


def run_test(repo: Repo, p: Batch) -> None:
    """Run the checkpoint's test on the merged result, within its time limit; when it fails,
    bisect over the agent merges (a merge train) to name the first agent whose merge breaks it.
    Runs without the fleet's lock: a long test does not hold up the fleet's other commands."""
    if p.checkpoint is None or not p.checkpoint.test or p.new is None:
        return
    cp, cmd, new = p.checkpoint, p.checkpoint.test, p.new
    assert new is not None
    first = _attempt(repo, new, p, "the merged result", _test_log(repo))
    if first.ok:
        return
    merged = [(s.agent, s.merged) for s in p.steps if s.merged]
    lo, hi = 0, len(merged) - 1  # merged[hi] fails; find the first that does
    while lo < hi:
        mid = (lo + hi) // 2
        if _attempt(repo, merged[mid][1], p, f"the merge of agent '{merged[mid][0].name}'").ok:
            lo = mid + 1
        else:
            hi = mid
    culprit = merged[lo][0]
    base_fails = lo == 0 and not _attempt(repo, p.old, p, p.base).ok
    if base_fails:
        lines = [f"checkpoint {cp.name}: `{cmd}` fails on {p.base} already; nothing was changed"]
        hint = f"fix {p.base} first"
    else:
        lines = [f"checkpoint {cp.name}: `{cmd}` fails on the merged result; nothing was changed",
                 f"  the first merge that breaks it: agent '{culprit.name}' ({culprit.branch})"]
        hint = f"fix it on {culprit.branch}, or merge the checkpoint without '{culprit.name}'"
    raise FleetError("\n".join(lines + _ended_with(first)), hint)


def check_ready(repo: Repo, p: Batch) -> None:
    """Before the checkpoint's test (which may take long): what would stop the merge anyway."""
    if not p.ok:
        raise p.failure()
    if p.new is None:
        return
    where = repo.checked_out(p.base)
    if where is not None and (index_lock := repo.index_lock_file(where)).exists():
        raise FleetError(f"{index_lock} exists: another git process is using the index of {where}, or one was "
                         "killed; nothing was changed",
                         "if no git process is running there, remove it, then merge again")
    if p.checkpoint is not None and repo.ref_value(f"refs/tags/{p.checkpoint.tag(p.rounds + 1)}") is not None:
        tag = p.checkpoint.tag(p.rounds + 1)
        raise FleetError(f"round {p.rounds + 1} of checkpoint {p.checkpoint.name} was merged meanwhile (tag {tag} "
                         "exists); nothing was changed", "see git fleet-checkpoint, and merge again if it is ready")


def same_merge(repo: Repo, tested: Batch, now: Batch) -> bool:
    """Whether `now` (worked out again, under the lock) merges what `tested` was tested on: the same
    base, the same agents' tips, and the same result."""
    return (now.ok and now.old == tested.old and [(s.agent.name, s.tip) for s in now.steps] ==
            [(s.agent.name, s.tip) for s in tested.steps] and now.new is not None and tested.new is not None
            and repo.tree_of(now.new) == repo.tree_of(tested.new))


def land(repo: Repo, p: Batch, publish: Callable[[str, tuple[str, str] | None], None] | None = None) -> list[str]:
    """The base moves to the tested merge, with the work tree that has it checked out and the
    checkpoint's tag (moves.py: what a crash at any moment leaves, and who finishes it); the
    caller holds the fleet's lock. `publish(new, tag)`: first, on the fleet's remote (raising
    when it is refused). Returns warnings."""
    check_ready(repo, p)
    if p.new is None:
        return []
    also: tuple[tuple[str, str], ...] = ()
    if p.checkpoint is not None:
        who = ", ".join(s.agent.name for s in p.steps)
        tag = p.checkpoint.tag(p.rounds + 1)
        also = ((f"refs/tags/{tag}", repo.make_tag(tag, p.new, f"Checkpoint {p.checkpoint.name}, round {p.rounds + 1}: "
                                                                f"{who}")),)
    move = moves.Move(f"refs/heads/{p.base}", p.old, p.new, "merge", also, _log_line(p))
    if publish is None:
        return moves.carry_out(repo, move, f"git-fleet: merge {len(p.steps)} agent(s) into {p.base}")
    moves.precheck(repo, move)  # (before the remote has it: what would stop the move here stops it first)
    publish(p.new, also[0] if also else None)
    try:
        return moves.carry_out(repo, move, f"git-fleet: merge {len(p.steps)} agent(s) into {p.base}")
    except FleetError as e:
        raise FleetError(f"{e.message.replace('nothing was changed', 'nothing was changed here')}; the fleet's remote "
                         f"has the merge already ({p.new[:12]})",
                         f"bring it here: git pull --ff-only (in {repo.main_worktree})") from None


# -- the checkpoint merge, as a fleet command runs it ------------------------------------------

def merge(fleet: Fleet, names: Sequence[str], checkpoint: str | None = None, *, dry_run: bool = False) -> Batch:
    """Work out the merge of the named agents (a checkpoint's, or every agent with new commits) and,
    unless dry_run, carry it out all or nothing. Returns the Batch."""
    def prepared() -> Batch:
        cp = fleet.config.checkpoint(checkpoint) if checkpoint else None
        if cp and names:
            raise UsageError("give either --checkpoint or agent names, not both")
        chosen = [fleet.config.agent(n) for n in (cp.agents if cp else names or list(fleet.config.agents))]
        across = merge_remote.gather(fleet, chosen)
        p = prepare(fleet.repo, fleet.config, fleet.main, chosen, cp, across.tips if across else None)
        p.warnings += across.notes if across else []
        p.across = across
        return p

    with fleet.editing():
        lost_journal.refuse_unreadable(fleet.repo, fleet.config.base)
        fleet.require_approved("the merge counts only approved zones")
        p = prepared()
        if dry_run:
            return p
        check_ready(fleet.repo, p)
        if any(sandbox_layout.ever_sandboxed(fleet, s.agent) for s in p.steps) and p.checkpoint and p.checkpoint.test:
            missing = sandbox.support().missing()
            if missing:
                raise FleetError(f"checkpoint {p.checkpoint.name}: its test runs code of sandboxed agents, and this "
                                 f"system lacks what the sandbox needs: {missing}; nothing was changed",
                                 "merge where the sandbox is supported, or turn the agents' sandbox off")
            p.sandbox_ports = fleet.config.sandbox_ports
    with runner.stoppable():  # the test runs without the lock: the fleet's other commands go on
        run_test(fleet.repo, p)
    with fleet.editing():
        again = prepared() if p.new is not None else p
        if not again.ok:
            raise again.failure()  # (local changes in the base's work tree, made during the test, say)
        if p.new is not None and not same_merge(fleet.repo, p, again):
            raise FleetError(f"{p.base} or an agent's branch moved while the checkpoint test ran (or the "
                             "configuration changed what the merge makes); nothing was changed",
                             "run the merge again: the test runs on what is merged")
        across = again.across
        p.warnings += land(fleet.repo, p, None if across is None else
                           lambda new, tag: merge_remote.publish(fleet, across, new, tag))
        return p

