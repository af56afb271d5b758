"""git fleet-teleport pull: the agent here made to hold the snapshot parked on the remote.
Registered and given a worktree if it has none; else its worktree brought up to date, refused
where work made here since the last teleport would be lost, kept at a backup ref with --force.
Its claimed tasks are adopted on the bus here."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import agents, brief, holds, lock, lost_journal, machines
from ..config import Agent
from ..errors import FleetError
from ..gateway import plumbing
from ..gateway.plumbing import git
from ..moves import gone_worktree
from ..processes import working_in
from ..sessions import Sessions
from ..snapshot import State, restore
from .commit import Outcome, Snapshot, capture, counts, meta_for, read, write
from .remote import BACKUPS, fetch, keep, local_ref, remember, remote_of, remote_refs

if TYPE_CHECKING:
    from ..fleet import Fleet


def pull_agent(fleet: Fleet, name: str, given_remote: str | None, *, force: bool = False, path: str | None = None,
               take_over: bool = False) -> Outcome:
    """Make the agent here hold the snapshot on the remote. Only a worktree this repository has
    registered for the agent is ever restored into; without one, one is made (at --path, or where
    the configuration puts it, if nothing is there) or the pull is refused."""
    lost_journal.refuse_unreadable(fleet.repo, fleet.config.base)  # it moves the agent's branch: not past a lost move
    main = fleet.main
    remote = remote_of(main, given_remote, fleet.config.base)
    oid = remote_refs(main, remote, name).get(name)
    if oid is None:
        raise FleetError(f"remote '{remote}' holds no snapshot of '{name}'",
                         f"see what is parked there: git fleet-teleport list --remote {remote}")
    fetch(main, remote, [name])
    snap = read(oid, main, name)
    meta, state = snap.meta, snap.state
    out = Outcome(name, remote, oid, meta["branch"], counts(state, main), head=state.head)
    agent = fleet.config.agents.get(name)
    if agent is not None and _running_here(fleet, name):
        raise FleetError(f"agent '{name}' is running here (in the fleet's tmux session); what it writes while "
                         "its worktree is replaced would be lost; nothing was changed",
                         f"stop it first: git fleet-down {name}")
    before, taken = _take_hold(fleet, remote, name, take_over)
    try:
        with fleet.repo.scratch() as space:
            agent = _bring_here(fleet, agent, snap, out, force, path, space)
    except BaseException:
        if taken is not None and (before is None or before.tip != taken.tip):
            holds.restore(fleet, remote, taken, before)
        raise
    remember(main, name, oid)
    out.tasks = _claim_tasks(fleet, agent, meta.get("tasks", []), out)
    brief.write_brief(fleet, agent)
    out.worktree = str(fleet.locate(agent))
    if _has_submodules(state, main):
        out.warnings.append(f"the agent's branch has submodules: git -C {shlex.quote(out.worktree)} "
                            "submodule update --init")
    return out


def _bring_here(fleet: Fleet, agent: Agent | None, snap: Snapshot, out: Outcome, force: bool, path: str | None,
                space: Path) -> Agent:
    """The agent registered here, with a worktree of this repository's that holds the snapshot."""
    main, meta, state, name = fleet.main, snap.meta, snap.state, out.agent
    if agent is None:
        return _register(fleet, meta, state, out, path, space)
    else:
        if list(agent.zone) != meta.get("zone"):
            out.warnings.append(f"the snapshot's zone of '{name}' differs from this fleet's; this fleet's is kept")
        out.branch = agent.branch
        where = fleet.locate(agent)
        gone = fleet.repo.worktree_with(agent.branch, prunable=True)
        if where is None and gone is not None and gone.prunable:
            raise gone_worktree(agent.branch, gone.path, "pull again")
        if where is not None and os.path.realpath(where) == os.path.realpath(main):
            raise FleetError(f"{agent.branch} is checked out in the main worktree ({main}); an agent's state is "
                             "restored only into a worktree of its own; nothing was changed",
                             f"switch the main worktree back to {fleet.config.base}, then pull again")
        with lock.hold(fleet.repo.common_dir, fleet.waiting):  # no sync or merge moves it meanwhile
            if where is None or not where.is_dir():
                _recreate_worktree(fleet, agent, state, out, path, space)
            else:
                if path is not None and os.path.realpath(path) != os.path.realpath(where):
                    out.warnings.append(f"'{name}' has its worktree at {where}; --path is for making one")
                _bring_up_to_date(fleet, agent, where, snap, out, force, space)
        return agent


def _take_hold(fleet: Fleet, remote: str, name: str, take_over: bool) -> tuple[holds.Hold | None, holds.Hold | None]:
    """Where the fleet spans machines through `remote`: the agent held for this machine (refused
    while another machine holds it, unless take_over); the hold before, and the one taken."""
    if machines.remote_of(fleet.repo) != remote:
        return None, None
    machines.fetch(fleet.repo, remote)
    before = holds.before_taking(fleet.repo.pygit, remote, name)
    return before, holds.take(fleet, remote, name, take_over=take_over, pulling=True)


def _running_here(fleet: Fleet, name: str) -> bool:
    try:
        return bool(Sessions(fleet).running([name]))
    except FleetError:
        return False  # no tmux here: nothing of the fleet's runs in it


def _has_submodules(state: State, cwd: Path) -> bool:
    return b"160000 commit " in git(["ls-tree", "-r", state.work], cwd).stdout


def _branch_check(fleet: Fleet, branch: str, head: str) -> None:
    """Refuse if the local branch has commits the snapshot's head lacks (moving it would lose them)."""
    tip = fleet.repo.branch_tip(branch)
    if tip is not None and not fleet.repo.is_ancestor(tip, head):
        raise FleetError(f"both sides moved on: branch {branch} here has commits that the snapshot lacks",
                         f"keep them under another name (git branch -m {branch} {branch}-here), then pull again")


def _register(fleet: Fleet, meta: dict[str, Any], state: State, out: Outcome, path: str | None, space: Path) -> Agent:
    """A new agent here, as the snapshot describes it: registered, with its branch and worktree."""
    name, branch = meta["agent"], meta["branch"]
    _branch_check(fleet, branch, state.head)
    settings = {k: v for k, v in meta.get("settings", {}).items() if k in Agent.SESSION_KEYS}
    had_branch = fleet.repo.branch_tip(branch) is not None
    agent, report = agents.add(fleet, name, meta.get("zone") or [], branch=branch, base=state.head, session=settings,
                              env=tuple(sorted(meta.get("env", {}).items())), path=path)
    out.warnings += [w for w in report.warnings if "--base" not in w]
    try:
        _fill(fleet, brief.require_worktree(fleet, agent), state, space)
    except BaseException:
        agents.remove(fleet, name, force=True, keep_branch=had_branch)  # as it was before the pull
        tip = fleet.repo.branch_tip(branch)
        if not had_branch and tip is not None:
            fleet.repo.delete_branch(branch, tip)
        raise
    out.created = True
    return agent


def _recreate_worktree(fleet: Fleet, agent: Agent, state: State, out: Outcome, path: str | None, space: Path) -> None:
    """A registered agent without a worktree in this repository gets a new one, never another's."""
    _branch_check(fleet, agent.branch, state.head)
    where = Path(os.path.abspath(path)) if path else fleet.planned_worktree(agent)
    if where.exists() and (not where.is_dir() or any(where.iterdir())):
        raise FleetError(f"{where} exists and is not a worktree of this repository, so '{agent.name}' cannot be "
                         "restored there; nothing was changed",
                         f"pull into a new place: git fleet-teleport pull {agent.name} --path DIR")
    fleet.repo.forget_worktree(where)  # a record of it whose directory is gone
    made_branch = fleet.repo.branch_tip(agent.branch) is None
    if made_branch:
        fleet.repo.create_branch(agent.branch, state.head)
    try:
        fleet.repo.worktree_add(where, agent.branch)
        fleet.forget_worktrees()
        _fill(fleet, where, state, space)
        fleet.register(agent.name, where)  # where this clone keeps it (a --path included)
    except BaseException:
        if where.is_dir():
            fleet.repo.worktree_remove(where, force=True)
        fleet.repo.forget_worktree(where)
        fleet.forget_worktrees()
        if made_branch and fleet.repo.branch_tip(agent.branch) == state.head:
            fleet.repo.delete_branch(agent.branch, state.head)
        raise
    out.created = True


def _fill(fleet: Fleet, where: Path, state: State, space: Path) -> None:
    """A fresh worktree on the agent's branch made to hold `state`; the branch, if it was already
    here, is behind the snapshot (checked by _branch_check) and fast-forwards."""
    with fleet.repo.acting_on(where):
        if plumbing.out(["rev-parse", "HEAD"], where) != state.head:
            git(["merge", "--quiet", "--ff-only", state.head], where)
        restore(state, where, space)


def _bring_up_to_date(fleet: Fleet, agent: Agent, where: Path, snap: Snapshot, out: Outcome, force: bool,
                      space: Path) -> None:
    """Replace the worktree's state by the snapshot's, if nothing made here since the last
    teleport would be lost (or, with force, after keeping it at refs/fleet/backups/AGENT/N)."""
    main, state = fleet.main, snap.state
    with fleet.repo.acting_on(where):
        here = capture(agent, where, fleet.config.base, space, fleet.repo.confined(where))
    if here.same(state):
        out.unchanged = True
        return
    busy = working_in(where)
    if busy:
        raise FleetError(f"processes work in {where}: " + ", ".join(busy[:3]) + (" and more" if len(busy) > 3 else "")
                         + "; what they write while the worktree is replaced would be lost; nothing was changed",
                         f"stop them first (if it is the agent, in tmux: git fleet-down {agent.name}), then pull again")
    last = local_ref(main, agent.name)
    known = last is not None and read(last, main).state.same(here)
    clean = here.clean(plumbing.out(["rev-parse", f"{here.head}^{{tree}}"], main))
    moved = not fleet.repo.is_ancestor(here.head, state.head)
    if (moved or not (known or clean)) and not force:
        wt, short = shlex.quote(str(where)), snap.commit[:12]
        if moved:
            raise FleetError(f"both sides moved on: {agent.branch} in {where} has commits that the snapshot lacks",
                             f"keep both: git -C {wt} merge {short}^1 && git -C {wt} stash apply --index {short}\n"
                             f"or take the snapshot's state with --force (what is here is kept at {BACKUPS}"
                             f"{agent.name}/N)")
        raise FleetError(f"agent '{agent.name}' has changes in {where} made since it was last teleported",
                         f"set them aside (git -C {wt} stash -u) and pull again, or pull with --force;\n"
                         f"either way what is here is kept: in the stash, or at {BACKUPS}{agent.name}/N")
    if moved or not (known or clean):
        ref = keep(main, agent.name, write(here, meta_for(fleet, agent, "backup"), main))
        look = shlex.quote(f"{where}-backup-{ref.rsplit('/', 1)[1]}")
        out.warnings.append(f"what was here is kept at {ref}; to bring it back: git worktree add --detach {look} "
                            f"{ref}^1 && git -C {look} stash apply --index {ref}")
    with fleet.repo.acting_on(where):
        # (a last look, just before)
        if not capture(agent, where, fleet.config.base, space, fleet.repo.confined(where)).same(here):
            raise FleetError(f"{where} changed while it was being pulled into; nothing was replaced",
                             "stop whatever writes there, then pull again")
        git(["reset", "--quiet", "--hard", state.head], where)
        git(["clean", "--quiet", "-d", "--force"], where)
        restore(state, where, space)


def _claim_tasks(fleet: Fleet, agent: Agent, tasks: list[dict[str, Any]], out: Outcome) -> list[str]:
    if not tasks:
        return []
    bus = fleet.bus()
    claimed = []
    for t in tasks:
        try:
            bus.adopt(int(t["id"]), t["file"], t["spec"], agent.name)
            claimed.append(t["file"])
        except FleetError as e:
            out.warnings.append(f"task {t['file']} not claimed here: {e.message}")
    return claimed
