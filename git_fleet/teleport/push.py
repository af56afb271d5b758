"""git fleet-teleport push and list: the agent's state captured, written as a snapshot and parked on
the remote; what is parked there."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import brief, holds, lock, machines
from ..errors import FleetError, GitError
from ..gateway.meeting import Update
from .commit import Outcome, capture, counts, meta_for, read, write
from .remote import fetch, local_ref, push, remember, remote_of, remote_refs

if TYPE_CHECKING:
    from ..fleet import Fleet


def push_agent(fleet: Fleet, name: str, given_remote: str | None, *, force: bool = False) -> Outcome:
    agent = fleet.config.agent(name)
    main = fleet.main
    where = brief.require_worktree(fleet, agent)
    remote = remote_of(main, given_remote, fleet.config.base)
    # (no sync or merge moves it meanwhile; its git dir from the repository's record, never its .git)
    with fleet.repo.scratch() as space, lock.hold(fleet.repo.common_dir, fleet.waiting), fleet.repo.acting_on(where):
        state = capture(agent, where, fleet.config.base, space, fleet.repo.confined(where))
    meta = meta_for(fleet, agent, remote)
    snapshot = write(state, meta, main)
    parked = remote_refs(main, remote, name).get(name)
    last = local_ref(main, name)
    if parked is not None and parked != last and not force:
        raise FleetError(f"remote '{remote}' holds a snapshot of '{name}' ({parked[:12]}) that this clone has not seen",
                         f"bring it here first (git fleet-teleport pull {name}), or replace it with --force")
    push(main, remote, name, snapshot, parked, given_remote, also=_handoff(fleet, remote, name),
         key=machines.key(fleet.repo))
    remember(main, name, snapshot)
    return Outcome(name, remote, snapshot, agent.branch, counts(state, main), [t["file"] for t in meta["tasks"]],
                   worktree=str(where), head=state.head)


def _handoff(fleet: Fleet, remote: str, name: str) -> Update | None:
    """Where the fleet spans machines through `remote`: the agent's hold, released by this machine
    for the one that pulls it (refused if this machine does not hold it)."""
    if machines.remote_of(fleet.repo) != remote:
        return None
    machines.fetch(fleet.repo, remote)
    me = machines.this(fleet.repo).id
    why = holds.refused(fleet.repo.pygit, remote, name, me)
    if why:
        raise FleetError(f"{why}; nothing was sent", f"pull it here first: git fleet-teleport pull {name}")
    return holds.handoff(fleet.repo.pygit, remote, name, me)


def parked(fleet: Fleet, given_remote: str | None) -> list[dict[str, Any]]:
    main = fleet.main
    remote = remote_of(main, given_remote, fleet.config.base)
    found = remote_refs(main, remote)
    if found:
        fetch(main, remote, sorted(found))
    rows = []
    for agent, oid in sorted(found.items()):
        row: dict[str, Any] = {"agent": agent, "snapshot": oid, "seen_here": local_ref(main, agent) == oid}
        try:
            snap = read(oid, main)
            row.update(branch=snap.meta.get("branch"), host=snap.meta.get("host"), time=snap.meta.get("time"),
                       head=snap.state.head, tasks=[t.get("file") for t in snap.meta.get("tasks", [])],
                       **counts(snap.state, main))
        except (FleetError, GitError) as e:
            row["error"] = e.message
        rows.append(row)
    return rows
