"""One agent, one machine: which machine holds each agent of a fleet that spans machines, as a
ref on the fleet's remote (refs/fleet/agents/NAME), a chain of commits each taken by a
compare-and-swap: `hold` (this machine runs it; `reason` says whose hold it took over), and
`handoff` (released by a teleport push, for the machine that pulls it). A machine that finds
its agent held by another is refused its next claim, result or push, told where the agent went.
The commit hook never asks: it does not wait on the network."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import agent_state, machines, records
from .errors import FleetError
from .gateway import meeting
from .gateway.meeting import Update

if TYPE_CHECKING:
    import pygit2

    from .fleet import Fleet

AGENTS = "agents/"
UNREADABLE = "(unreadable)"  # the machine of a hold whose record this git-fleet cannot read (take)
REPORT = "state.json"  # in a hold's tree: what the agent's hooks last reported on its machine


@dataclass(frozen=True)
class Hold:
    agent: str
    machine: str | None  # None: handed off, for whichever machine pulls it
    since: int  # the holder's own clock: shown, never compared
    tip: str
    record: records.Record

    def where(self, repo: pygit2.Repository, remote: str) -> str:
        """'machine ID (user@host) since TIME', as the machine's record on the remote says."""
        who = describe(repo, remote, self.machine) if self.machine else "no machine (handed off)"
        return f"{who} since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.since))}"


def describe(repo: pygit2.Repository, remote: str, machine: str) -> str:
    oid = meeting.refs_under(repo, meeting.tracking(remote) + machines.MACHINES).get(machine)
    if oid is None:
        return f"machine {machine}"
    try:
        said = machines.parse_record(meeting.commit(repo, oid).message)
    except FleetError:
        return f"machine {machine}"
    return f"machine {machine} ({said.get('user', '?')}@{said.get('host', '?')})"


def read(repo: pygit2.Repository, remote: str, agent: str) -> Hold | None:
    """The agent's hold as this clone last fetched it."""
    oid = meeting.refs_under(repo, meeting.tracking(remote) + AGENTS).get(agent)
    if oid is None:
        return None
    commit = meeting.commit(repo, oid)
    rec = records.parse(commit.message, f"{meeting.SHARED}{AGENTS}{agent}")
    return Hold(agent, rec.machine if rec.op == "hold" else None, rec.since or commit.commit_time, oid, rec)


def before_taking(repo: pygit2.Repository, remote: str, agent: str) -> Hold | None:
    """The agent's hold before a take (read), to give back should what follows fail; None also
    for one this git-fleet cannot read (take says why; given back, it is free)."""
    try:
        return read(repo, remote, agent)
    except FleetError:
        return None


def refused(repo: pygit2.Repository, remote: str, agent: str, machine: str) -> str | None:
    """Why `machine` may not act for `agent`: it is held by another machine; None if it may."""
    hold = read(repo, remote, agent)
    if hold is None or hold.machine == machine:
        return None
    if hold.machine is None:
        return (f"agent '{agent}' was handed off by git fleet-teleport push (from machine {hold.record.machine}): it "
                "runs where it is pulled, not here until it is pulled here")
    return (f"agent '{agent}' runs on {hold.where(repo, remote)}, not on this machine ({machine}): "
            "it was taken over or moved there")


def beat(repo: pygit2.Repository, remote: str, agent: str, machine: str, common_dir: str) -> Update | None:
    """The hold of `agent` renewed by its machine, to push with a step of its own (atomically): a
    compare-and-swap on the hold, so a step of a machine whose hold was taken over fails; and
    when the agent was last heard from, and what its hooks last reported here, for the others.
    None if no machine holds the agent. `common_dir`: the clone's, where its hooks report."""
    return _next(repo, remote, agent, machine, "hold", common_dir)


def report_here(common_dir: str, agent: str) -> dict[str, bytes]:
    """What the agent's hooks last reported on this machine, for its hold's tree: its state, for
    how long it had held (a duration: the others add how long ago they first saw this beat, on
    their own clocks), the tool and the message; nothing where its hooks never reported."""
    said = agent_state.read(common_dir, agent)
    if said is None:
        return {}
    held = max(0, int(time.time() - float(str(said["since"]))))
    report = {"state": said["state"], "for": held, "tool": said.get("tool"),
              "message": str(said["message"])[:500] if said.get("message") else None}
    return {REPORT: json.dumps({k: v for k, v in report.items() if v is not None}, sort_keys=True).encode()}


def reported(repo: pygit2.Repository, hold: Hold) -> dict[str, Any] | None:
    """What the hold's last beat carried of its agent's state (report_here); None if nothing."""
    try:
        entry = meeting.commit(repo, hold.tip).tree[REPORT]
        found = json.loads(meeting.blob(repo, str(entry.id)))
    except (KeyError, ValueError, FleetError):
        return None
    ok = isinstance(found, dict) and found.get("state") in agent_state.STATES and isinstance(found.get("for"), int)
    if not ok:
        return None
    # (another machine's words, shown on this one's terminal: text, and nothing a terminal obeys)
    return {**found, **{k: "".join(c if c.isprintable() else " " for c in v)[:500] if isinstance(v, str) else None
                        for k in ("tool", "message") for v in [found.get(k)]}}


def handoff(repo: pygit2.Repository, remote: str, agent: str, machine: str) -> Update | None:
    """The hold of `agent` released by its machine, for whichever machine pulls it (teleport
    push, atomically with the snapshot); None if no machine holds it."""
    return _next(repo, remote, agent, machine, "handoff")


def _next(repo: pygit2.Repository, remote: str, agent: str, machine: str, op: str,
          common_dir: str | None = None) -> Update | None:
    """The next record of the hold `machine` has of `agent` (op hold: renewed, as it was; handoff:
    released now), a compare-and-swap on the hold; None if `machine` does not hold it."""
    hold = read(repo, remote, agent)
    if hold is None or hold.machine != machine:
        return None
    rec = (records.new("hold", agent=agent, machine=machine, reason=hold.record.reason, since=hold.since) if op == "hold"
           else records.new(op, agent=agent, machine=machine, since=int(time.time())))
    files = report_here(common_dir, agent) if common_dir is not None else {}
    return Update(meeting.SHARED + AGENTS + agent, meeting.make_commit(repo, rec.message(), files, hold.tip), hold.tip)


def take(fleet: Fleet, remote: str, agent: str, *, take_over: bool = False, pulling: bool = False) -> Hold:
    """Hold `agent` for this machine: refused while another machine holds it (naming it and
    since when) unless `take_over`, which that machine then sees at its next step; one handed
    off by a teleport push is taken by the pull (`pulling`), which brings its work, or with
    `take_over`."""
    repo, me = fleet.repo.pygit, machines.this(fleet.repo)
    cwd = machines.at(fleet.repo)
    for _ in range(10):
        machines.fetch(fleet.repo, remote)
        try:
            hold = read(repo, remote, agent)
        except FleetError as e:  # (a record no git-fleet wrote, or a later one's: only a take-over replaces it)
            if not take_over:
                raise FleetError(f"{e.message}; so whether another machine holds '{agent}' is not known",
                                 "take it for this machine with --take-over (a later git-fleet's hold: upgrade "
                                 "this one first)") from None
            tip = meeting.refs_under(repo, meeting.tracking(remote) + AGENTS)[agent]
            hold = Hold(agent, UNREADABLE, 0, tip, records.new("hold", agent=agent, machine=UNREADABLE))
        if hold is not None and hold.machine == me.id:
            return hold
        if hold is not None and hold.machine is not None and not take_over:
            raise FleetError(f"agent '{agent}' is held by {hold.where(repo, remote)}; one agent runs on one machine "
                             "at a time", "move it with git fleet-teleport push there and pull here; if that machine is "
                             "gone, take it with --take-over (that machine is then refused its next claim, result or "
                             "push)")
        if hold is not None and hold.record.op == "handoff" and not (pulling or take_over):
            raise FleetError(f"agent '{agent}' was handed off by git fleet-teleport push from machine "
                             f"{hold.record.machine}, with its work in the snapshot",
                             f"pull it, which brings that work: git fleet-teleport pull {agent} (or take it without the "
                             "work with --take-over)")
        reason = (None if hold is None or not hold.machine else "taken over from a hold it could not read"
                  if hold.machine == UNREADABLE else f"taken over from machine {hold.machine}")
        rec = records.new("hold", agent=agent, machine=me.id, reason=reason, since=int(time.time()))
        new = meeting.make_commit(repo, rec.message(), {}, hold.tip if hold else None)
        pushed = meeting.push(cwd, remote, [Update(meeting.SHARED + AGENTS + agent, new, hold.tip if hold else None)],
                              key=machines.key(fleet.repo))
        if pushed.won:
            meeting.set_tracking(repo, machines.place(fleet.repo, remote) / "fetched",
                                 {meeting.tracking(remote) + AGENTS + agent: new})
            return Hold(agent, me.id, int(time.time()), new, rec)
        if pushed.refused:
            raise FleetError(f"remote '{remote}' refused the hold of '{agent}': {pushed.refused}")
    raise FleetError(f"the hold of '{agent}' kept changing on '{remote}'", "try again")


def restore(fleet: Fleet, remote: str, taken: Hold, before: Hold | None) -> None:
    """Give the hold back as it was before `taken` (a join or pull that failed after taking it):
    a new record on top (a chain only grows), or `free` where no machine held it."""
    me = machines.this(fleet.repo).id  # (the record speaks for it: a server asking for signed machines checks)
    rec = (records.new("free", agent=taken.agent) if before is None
           else records.new(before.record.op, agent=taken.agent, machine=before.record.machine,
                            reason=records.GIVEN_BACK + me, since=before.since))
    new = meeting.make_commit(fleet.repo.pygit, rec.message(), {}, taken.tip)
    with contextlib.suppress(FleetError):  # (if not, the next join, or --take-over, settles it)
        meeting.push(machines.at(fleet.repo), remote, [Update(meeting.SHARED + AGENTS + taken.agent, new, taken.tip)],
                     key=machines.key(fleet.repo))


def hold_to_run(fleet: Fleet, name: str) -> None:
    """Before an agent starts here (git fleet-up) in a fleet across machines: held for this
    machine, refused while another holds it. With the remote away, only an agent this clone last
    knew held here starts (an agent held nowhere might be started elsewhere meanwhile)."""
    remote = machines.remote_of(fleet.repo)
    if remote is None:
        return
    try:
        take(fleet, remote, name)
    except meeting.Unreachable as e:
        last = read(fleet.repo.pygit, remote, name)
        if last is None or last.machine != machines.this(fleet.repo).id:
            raise FleetError(f"{e.message}; '{name}' is not known to run on this machine, so it does not start",
                             "start it when the remote answers, or run it where it is held") from None
