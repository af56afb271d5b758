"""What a server accepts of the fleet's shared refs (refs/fleet/**), a fleet across machines'
bus and holds: each ref a chain of records (records.py), each push a step the protocol allows.

Without knowing who pushes (git daemon, a path), the server holds every machine to the protocol:
a task's ref moves only by one commit on top of what it was, a step that may follow the last
(records.follows: a claim is the next attempt, only the holder renews, releases or ends it, from
the machine that made the claim or the one that holds the agent now); the ids only go up; the
log and the machines' records are never deleted; a task's ref and a result kept aside go only
when the same push moves the log (a fold), and only once the task has ended. What it cannot
judge without identity: a take-over of a lease (a claim of the next attempt) and of an agent's
hold, which clocks and machines vouch for, not the server.

With identity (`git fleet-init --server --signed-machines`: fleet.signedMachines), every push
to refs/fleet/ must be signed (`git push --signed`, a push certificate) by a machine of the fleet,
with the SSH key its record (refs/fleet/machines/ID, key.pub) registered when it first joined,
and each record it pushes must speak for that machine: a machine writes only its own claims,
results, heartbeats and holds, and its record is registered with its own key. The first record
of a machine id is taken on trust (whoever registers an id first owns it).
"""

from __future__ import annotations

import base64
import hashlib
import os

from . import __version__, records
from .errors import FleetError
from .gateway import plumbing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

SHARED = "refs/fleet/"
KNOWN = ("bus/tasks/", "bus/kept/", "bus/ids", "bus/log", "agents/", "machines/", "teleport/", "backups/",
         "teleport-backup/")


def refusals(updates: Sequence[tuple[str, str, str]], cwd: str) -> list[FleetError]:
    """Why the server refuses these updates of refs under refs/fleet/ (ref, new, old)."""
    moved = {ref: (new, old) for ref, new, old in updates}
    log_moves = f"{SHARED}bus/log" in moved
    errors = []
    for ref, new, old in updates:
        if not ref.startswith(SHARED):
            continue
        try:
            why = _judge(ref[len(SHARED):], new, old, cwd, log_moves, moved)
        except FleetError as e:
            why = e.message
        if why:
            errors.append(FleetError(f"push of {ref} rejected: {why}", _HINT))
    return errors


_HINT = "the fleet's shared refs move by git fleet-task, -join and -teleport, which keep to the protocol"


def _judge(name: str, new: str, old: str, cwd: str, log_moves: bool, moved: dict[str, tuple[str, str]]) -> str | None:
    zero = plumbing.ZERO_OID
    if not name.startswith(KNOWN):
        return (f"this server's git-fleet ({__version__}) does not know refs/fleet/{name}: a later git-fleet may "
                "use it; upgrade the server's")
    if name.startswith(("teleport/", "backups/", "teleport-backup/")):
        return None  # (a snapshot: teleport's lease keeps it)
    if new == zero:
        return _deletion(name, old, cwd, log_moves)
    message, parents = _raw(new, cwd)
    if old == zero and parents:
        return "a new shared ref starts a chain of its own (a commit without parents)"
    if old != zero and parents != [old]:
        return f"a shared ref moves by one commit on top of what it was ({old[:12]})"
    if name.startswith("machines/"):
        # (a new key, on top: only where signatures say it is the machine's own, signed by its old key)
        signed = plumbing.out(["config", "--type=bool", "--get", REQUIRED], cwd, check=False) == "true"
        return None if old == zero or signed and _blob_text(f"{new}:{records.PUBLIC}", cwd) else \
            "a machine's record is written once (a new key only on a server that checks signed machines)"
    rec = records.parse(message, f"refs/fleet/{name}")
    if name.startswith("agents/"):
        ok = rec.op in ("hold", "handoff", "free") and rec.agent == name.removeprefix("agents/")
        return None if ok else "an agent's hold records hold, handoff or free of that agent"
    if name == "bus/ids":
        before = _read(old, cwd, "refs/fleet/bus/ids")[0].next if old != zero else 0
        return None if rec.op == "ids" and rec.next >= before else "the ids only go up"
    if name == "bus/log":
        if rec.op != "log":
            return "the log records folds"
        lost = set(_names(old, cwd)) - set(_names(new, cwd)) if old != zero else set()
        folded = {f"{int(r.removeprefix(SHARED + 'bus/tasks/')):06d}" for r, (n, _o) in moved.items()
                  if r.startswith(SHARED + "bus/tasks/") and r.removeprefix(SHARED + "bus/tasks/").isdigit()
                  and n == zero}
        missing = (folded - set(_names(new, cwd))) | lost
        return None if not missing else f"the log keeps every task folded into it ({', '.join(sorted(missing)[:3])} missing)"
    if name.startswith("bus/kept/"):
        number = name.removeprefix("bus/kept/").split("/", 1)[0]
        if not number.isdigit() or rec.op != "kept" or rec.task != int(number) or old != zero:
            return "a result kept aside is written once, under its task's number"
        return None if _task_known(int(number), cwd) else f"there is no task {number} to keep a result of"
    task = name.removeprefix("bus/tasks/")
    if not task.isdigit() or rec.task != int(task):
        return f"a step of task {rec.task} on the ref of another"
    prev = _read(old, cwd, f"refs/fleet/{name}")[0] if old != zero else None
    return records.follows(prev, rec, _holder(rec, moved, cwd)) or _task_tree(rec, new, old, cwd, moved)


def _task_tree(rec: records.Record, new: str, old: str, cwd: str, moved: dict[str, tuple[str, str]]) -> str | None:
    """What a task's step may hold: a new task its spec, under an id the same push gives out; a
    claim, renewal, release or removal the tree it had; an end that spec and its result."""
    names = _names(new, cwd)
    if rec.op == "open":
        ids = moved.get(f"{SHARED}bus/ids")
        if ids is None or ids[0] == plumbing.ZERO_OID:
            return "a new task's id is given out by the same push (refs/fleet/bus/ids)"
        first = _read(ids[1], cwd, "refs/fleet/bus/ids")[0].next if ids[1] != plumbing.ZERO_OID else 1
        if not first <= rec.task < _read(ids[0], cwd, "refs/fleet/bus/ids")[0].next:
            return f"task {rec.task} is not an id this push gives out (an id is never given out twice)"
        return None if names == ["spec.md"] else "a new task holds its spec, spec.md, alone"
    if rec.op in ("claim", "renew", "release", "removed"):
        return None if _tree(new, cwd) == _tree(old, cwd) else f"a {rec.op} changes nothing of the task's files"
    same_spec = _blob(new, "spec.md", cwd) == _blob(old, "spec.md", cwd)
    return None if names == ["result.md", "spec.md"] and same_spec else "an end adds the result, result.md, to the spec"


def _names(commit: str, cwd: str) -> list[str]:
    raw = plumbing.git(["ls-tree", "--name-only", commit], cwd, check=False).stdout.decode("utf-8", "replace")
    return sorted(raw.splitlines())


def _tree(commit: str, cwd: str) -> str:
    return plumbing.git(["rev-parse", f"{commit}^{{tree}}"], cwd, check=False).stdout.decode().strip()


def _blob(commit: str, path: str, cwd: str) -> str:
    return plumbing.git(["rev-parse", "-q", "--verify", f"{commit}:{path}"], cwd, check=False).stdout.decode().strip()


def _deletion(name: str, old: str, cwd: str, log_moves: bool) -> str | None:
    if name.startswith("machines/") and name.endswith(".atomic"):
        return None  # (init's probe of atomic pushes)
    if name.startswith(("bus/tasks/", "bus/kept/")) and log_moves:
        if name.startswith("bus/kept/"):
            return None
        rec = _read(old, cwd, f"refs/fleet/{name}")[0]
        return None if rec.ended else "only a task that has ended is folded into the log"
    return "deleting it loses the fleet's shared state (a task and a result kept aside go only with a fold of the log)"


def _holder(rec: records.Record, moved: dict[str, tuple[str, str]], cwd: str) -> str | None:
    """The machine that holds the step's agent once this push lands (its hold moves with the step)."""
    if not rec.agent:
        return None
    ref = f"{SHARED}agents/{rec.agent}"
    oid = moved[ref][0] if ref in moved else plumbing.git(["rev-parse", "-q", "--verify", ref], cwd,
                                                           check=False).stdout.decode().strip()
    if not oid or oid == plumbing.ZERO_OID:
        return None
    hold = _read(oid, cwd, ref)[0]
    return hold.machine if hold.op == "hold" else None


def _task_known(tid: int, cwd: str) -> bool:
    """Whether task `tid` exists here: its ref, or its directory in the log."""
    ref = plumbing.git(["rev-parse", "-q", "--verify", f"{SHARED}bus/tasks/{tid}"], cwd, check=False)
    if ref.returncode == 0:
        return True
    return plumbing.git(["rev-parse", "-q", "--verify", f"{SHARED}bus/log:{tid:06d}"], cwd, check=False).returncode == 0


def _raw(oid: str, cwd: str) -> tuple[str, list[str]]:
    """A commit's message and parents (a commit itself: never a tag that points at one)."""
    kind = plumbing.git(["cat-file", "-t", oid], cwd, check=False).stdout.decode().strip()
    if kind != "commit":
        raise FleetError(f"{oid[:12]} is a {kind or 'missing object'}, not a commit")
    raw = plumbing.git(["cat-file", "commit", oid], cwd, check=False)
    if raw.returncode != 0:
        raise FleetError(f"{oid[:12]} is not a commit")
    head, _, message = raw.stdout.decode("utf-8", "replace").partition("\n\n")
    return message, [line[7:] for line in head.splitlines() if line.startswith("parent ")]


def _read(oid: str, cwd: str, where: str) -> tuple[records.Record, list[str]]:
    message, parents = _raw(oid, cwd)
    return records.parse(message, where), parents


REQUIRED = "fleet.signedMachines"  # the server's git config: true where pushes must be signed by machines


def unsigned(updates: Sequence[tuple[str, str, str]], cwd: str) -> list[FleetError]:
    """Why a server that takes the fleet's shared refs only from its machines (REQUIRED) refuses
    these updates (ref, new, old): not signed by a machine of the fleet, or a record that
    speaks for another machine than the one that signed."""
    shared = [(ref, new, old) for ref, new, old in updates if ref.startswith(SHARED)]
    moved = {ref: (new, old) for ref, new, old in shared}
    if not shared or plumbing.out(["config", "--type=bool", "--get", REQUIRED], cwd, check=False) != "true":
        return []
    signer, why = _signer(shared, cwd)
    if signer is None:
        return [FleetError(f"push of {shared[0][0]} rejected: {why}", _SIGN_HINT)]
    errors = []
    for ref, new, old in shared:
        try:
            speaks = _speaks_for(ref[len(SHARED):], new, old, cwd, moved)
        except FleetError:
            speaks = None  # (what is wrong with the record, refusals() says)
        if speaks is not None and speaks != signer:
            errors.append(FleetError(f"push of {ref} rejected: it speaks for machine {speaks}, and the push is signed by "
                                     f"machine {signer}", "a machine writes only its own claims, results and holds"))
    return errors


_SIGN_HINT = ("this server takes the fleet's shared refs only in pushes signed by a machine of the fleet; git-fleet "
              "signs them with the machine's key (made by git fleet-init --remote or git fleet-join, with ssh-keygen)")


def _signer(shared: Sequence[tuple[str, str, str]], cwd: str) -> tuple[str | None, str]:
    """The machine whose registered key signed this push (git checked the signature: status G,
    and the nonce is this server's), else None and why not."""
    if not os.environ.get("GIT_PUSH_CERT"):
        return None, "the push is not signed (git push --signed)"
    if os.environ.get("GIT_PUSH_CERT_NONCE_STATUS") not in ("OK", "SLOP"):
        return None, f"the push certificate's nonce is not this server's ({os.environ.get('GIT_PUSH_CERT_NONCE_STATUS')})"
    if os.environ.get("GIT_PUSH_CERT_STATUS") != "G":
        return None, f"the push certificate's signature does not verify ({os.environ.get('GIT_PUSH_CERT_STATUS')})"
    used = os.environ.get("GIT_PUSH_CERT_KEY", "")
    keys = _registered(cwd)
    for ref, new, old in shared:  # (a machine registering itself: its key is in the record it pushes)
        name = ref[len(SHARED):]
        machine = name.removeprefix("machines/")
        # only an id this server has no record of: `old` is what the pusher says, checked by git
        # only after this hook (a push that is not atomic would land the rest under a stolen id)
        if name.startswith("machines/") and not name.endswith(".atomic") and old == plumbing.ZERO_OID \
                and machine not in keys and not _exists(ref, cwd):
            key = _blob_text(f"{new}:{records.PUBLIC}", cwd)
            if key and fingerprint(key) == used and not _enrolled(cwd, used):
                return None, (f"machine {machine}'s key is not enrolled on this server ({used}); enrol it where the "
                              f"server's repository is: echo '{' '.join(key.split()[:2])}' > {machine}.pub && "
                              f"git fleet-init --server --machine-key {machine}.pub")
            if key:
                keys[machine] = key
    for machine, key in keys.items():
        if fingerprint(key) == used:
            return machine, ""
    return None, f"the push is signed by a key no machine of the fleet registered ({used or 'none'})"


def _enrolled(cwd: str, used: str) -> bool:
    """Whether the key `used` (its fingerprint) may register a machine: any may, unless machines
    are enrolled (`git fleet-init --server --machine-key`: lines of the principal fleet-machine
    in the allowed signers), and then it must be one of theirs (matched by key, not by the
    principal git names: a key listed under several gets the first)."""
    from .server import MACHINE, SIGNERS  # (a server that enrols: the signers it keeps)

    try:
        with open(os.path.join(cwd, SIGNERS), encoding="utf-8") as fh:
            listed = [line.split() for line in fh if line.strip() and not line.startswith("#")]
    except (OSError, UnicodeDecodeError):
        return True
    machines = [fingerprint(" ".join(p[1:3])) for p in listed if len(p) >= 3 and MACHINE in p[0].split(",")]
    return not machines or used in machines


def fingerprint(public: str) -> str | None:
    """An SSH public key's fingerprint as git and ssh-keygen say it (SHA256:...)."""
    try:
        blob = base64.b64decode(public.split()[1], validate=True)
    except (IndexError, ValueError):
        return None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _registered(cwd: str) -> dict[str, str]:
    """Each machine's registered public key, from its record here."""
    listed = plumbing.out(["for-each-ref", "--format=%(refname)", f"{SHARED}machines/"], cwd, check=False)
    found = {}
    for ref in listed.splitlines():
        if not ref.endswith(".atomic"):
            key = _blob_text(f"{ref}:{records.PUBLIC}", cwd)
            if key:
                found[ref.removeprefix(f"{SHARED}machines/")] = key
    return found


def _exists(ref: str, cwd: str) -> bool:
    return plumbing.git(["rev-parse", "-q", "--verify", ref], cwd, check=False).returncode == 0


def _blob_text(spec: str, cwd: str) -> str:
    proc = plumbing.git(["cat-file", "blob", spec], cwd, check=False)
    return proc.stdout.decode("ascii", "replace").strip() if proc.returncode == 0 else ""


def _speaks_for(name: str, new: str, old: str, cwd: str, moved: dict[str, tuple[str, str]]) -> str | None:
    """The machine an update of refs/fleet/NAME speaks for; None where any machine of the fleet may
    push it (a fold's deletions; a snapshot or a backup of an agent no machine holds)."""
    zero = plumbing.ZERO_OID
    if name.startswith("machines/"):
        return name.removeprefix("machines/").removesuffix(".atomic")
    if name.startswith(("teleport/", "backups/", "teleport-backup/")):
        # an agent's snapshot: the machine that holds it (or hands it off in the same push)
        agent = name.split("/")[1] if name.count("/") else ""
        hold = moved.get(f"{SHARED}agents/{agent}", (None, None))[0] or _tip(f"{SHARED}agents/{agent}", cwd)
        return _read(hold, cwd, f"refs/fleet/agents/{agent}")[0].machine if hold and hold != zero else None
    if new == zero:
        return None
    rec = _read(new, cwd, f"refs/fleet/{name}")[0]
    if name.startswith("agents/") and old != zero:
        before = _read(old, cwd, f"refs/fleet/{name}")[0]
        given = (rec.reason or "").removeprefix(records.GIVEN_BACK) if (rec.reason or "").startswith(records.GIVEN_BACK) \
            else None
        if rec.op == "free" or given is not None:  # (a hold given back: by the machine that held it)
            return before.machine if given in (None, before.machine) else given + " (not the holder)"
    return rec.machine


def _tip(ref: str, cwd: str) -> str | None:
    return plumbing.out(["rev-parse", "-q", "--verify", ref], cwd, check=False) or None

