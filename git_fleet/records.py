"""The shared state of a fleet across machines as records: each step is a commit on a ref of the
fleet's remote, the step in its message (the bus's tasks, remote_bus/; which machine holds an
agent, holds.py).

A task's ref, refs/fleet/bus/tasks/N, is a chain of commits, one per step: open (the spec, in
the tree as spec.md), claim (attempt k by an agent on a machine, with its lease), renew, release,
and one end: done or failed (the result, result.md, added to the tree), cancelled or removed. The
step is the message's last line, JSON; its first line says it for a person reading `git log`.
Every commit is unique (the machine's id and a nonce): a push of an object a ref already holds
reports success, which would let two workers both believe they won.

FORMAT is the records' version: a record of a later one is refused with the version it needs,
never read as something else.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass

from .errors import FleetError

FORMAT = 1
NEEDS = {1: "0.1"}  # format -> the git-fleet version that reads it (said to older ones)
ENDS = ("done", "failed", "cancelled", "removed")
HOLDING = ("claim", "renew")
OPS = ("open", "claim", "renew", "release", *ENDS, "ids", "kept", "log", "hold", "handoff", "free")
GIVEN_BACK = "given back by machine "  # + its id: a hold's reason, given back (holds.restore; the server reads it)
PUBLIC = "key.pub"  # in the tree of a machine's record: the public key its pushes are signed with (machines.py)


@dataclass(frozen=True)
class Record:
    op: str
    task: int = 0
    attempt: int = 0
    agent: str | None = None
    machine: str | None = None
    lease: int = 0  # seconds a claim holds without renewal, judged on each observer's own clock
    reason: str | None = None
    next: int = 0  # the ids ref: the next task id
    since: int = 0  # a hold: when its machine took it (that machine's clock: shown, never compared)
    nonce: str = ""

    @property
    def ended(self) -> bool:
        return self.op in ENDS

    @property
    def holds(self) -> bool:
        return self.op in HOLDING

    def message(self) -> str:
        who = f" by {self.agent}" if self.agent else ""
        where = f" on {self.machine}" if self.machine else ""
        title = f"fleet: {self.op}" + (f" task-{self.task:03d}" if self.task else "") + who + where
        if self.attempt:
            title += f" (attempt {self.attempt})"
        fields = {k: v for k, v in asdict(self).items() if v not in (None, 0, "")}
        return title + "\n\n" + json.dumps({"fleet": FORMAT, **fields}, sort_keys=True) + "\n"


_TYPES: dict[str, type | tuple[type, ...]] = {
    "op": str, "task": int, "attempt": int, "agent": (str, type(None)), "machine": (str, type(None)), "lease": int,
    "reason": (str, type(None)), "next": int, "since": int, "nonce": str}


def new(op: str, **fields: object) -> Record:
    return Record(op, nonce=secrets.token_hex(8), **fields)  # type: ignore[arg-type]


def parse(message: str, where: str) -> Record:
    """The record in a commit's message; an error naming `where` when it is not one this version reads."""
    last = message.rstrip("\n").rpartition("\n")[2]
    try:
        data = json.loads(last)
        version = data.pop("fleet")
    except (ValueError, KeyError, AttributeError, TypeError):
        raise FleetError(f"{where}: not a git-fleet record") from None
    if not isinstance(version, int) or version > FORMAT:
        needed = NEEDS.get(version, "a later version") if isinstance(version, int) else "a later version"
        raise FleetError(f"{where}: written by a later git-fleet (record format {version}); this one reads "
                         f"format {FORMAT}", f"upgrade git-fleet on this machine (format {version} needs {needed})")
    try:
        record = Record(**data)
    except TypeError:
        raise FleetError(f"{where}: a record this git-fleet cannot read ({last[:80]})",
                         "upgrade git-fleet on this machine") from None
    for name, kind in _TYPES.items():
        value = getattr(record, name)
        if not isinstance(value, kind) or isinstance(value, bool) or isinstance(value, int) and not 0 <= value < 2**53:
            raise FleetError(f"{where}: its {name} is {value!r}, not what a git-fleet record holds there")
    if record.op not in OPS:
        raise FleetError(f"{where}: an unknown step '{record.op}'", "upgrade git-fleet on this machine")
    return record


def follows(prev: Record | None, rec: Record, holder: str | None = None) -> str | None:
    """Why `rec` cannot follow `prev` on a task's chain; None when it may. The one rule both the
    bus and the server's hook keep. `holder`: the machine that holds the agent (holds.py), where a
    claim made on another goes on (the agent moved there)."""
    if prev is None:
        return None if rec.op == "open" and rec.attempt == 0 else "a task's first step must be open"
    if prev.ended:
        return f"task-{prev.task:03d} has ended ({prev.op})"
    if rec.task != prev.task:
        return "a step of another task"
    if rec.op == "claim":
        return None if rec.attempt == prev.attempt + 1 and rec.agent else "a claim must be the next attempt"
    if rec.op in ("renew", "release", "done", "failed"):
        same = (prev.holds and (rec.attempt, rec.agent) == (prev.attempt, prev.agent)
                and rec.machine in (prev.machine, holder or prev.machine))
        return None if same else f"only the holder of task-{prev.task:03d} may {rec.op} it"
    if rec.op == "cancelled":
        return None
    if rec.op == "removed":
        return None if prev.op == "open" and prev.attempt == 0 else "only a task never claimed may be removed"
    return f"'{rec.op}' is not a step of a task"
