"""What a server accepts beyond each agent's zone: who may move the base and the agents' branches.

A pre-receive hook cannot tell pushers apart by itself: over a path remote or a shared account it
sees the pusher's own environment. What holds without knowing who pushes:
- the base and every agent's branch only move forward (no deletion, no force-push);
- the base moves only by merges of agent branches (`fleet.basePush = merges`, the default without
  keys): each merge's second parent is held to the zone of the agent it names, and the merge
  itself changes nothing of its own outside that zone. So nothing outside every agent's zone (the
  orchestrator's files, `.gitfleet.toml`, the hooks) reaches the base by a push.
A path remote (or any access to the server's files) gives the pusher the hook's environment and
the repository itself: no rule here holds against one; serve agents over ssh (accounts or a forced
command), `git daemon` or https.
What needs identity, from signed pushes (`git push --signed`, SSH keys, checked by git against the
allowed signers `git fleet-init --server --orchestrator-key/--agent-key` keeps):
- the orchestrator's signed push may do anything (a commit of its own on the base, a rewrite);
  with an orchestrator key, `basePush = signed` (the default then) lets only it move the base;
- with an agent's key, a push to that agent's branch must be signed by it (or the orchestrator).
`fleet.basePush = any` leaves the base open, as the repository's owner may choose.
"""

from __future__ import annotations

import os
import re

from . import check, durable
from .errors import FleetError, UsageError
from .gateway import plumbing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

SIGNERS = os.path.join("fleet", "signers")  # git's allowed-signers format, under the common dir
ORCHESTRATOR = "fleet-orchestrator"
AGENT = "fleet-agent-"  # + the agent's name
MACHINE = "fleet-machine"  # a machine enrolled: its key may register a machine id (server_shared.py)
MODES = ("merges", "signed", "any")
# "Merge fleet/x (agent x...)" (git fleet-merge), "Merge branch 'fleet/x'", "Merge remote-tracking
# branch 'origin/fleet/x'" (git merge)
_MERGE_SUBJECT = re.compile(r"^Merge (?:(?:remote-tracking )?branch '([^']+)'|(\S+) \(agent )")


def signer() -> str | None:
    """The principal that signed this push, when git checked the signature against the allowed
    signers and the nonce is this server's (receive-pack's GIT_PUSH_CERT_* variables; SLOP: a
    nonce of the last receive.certNonceSlop seconds, as stateless HTTP gives)."""
    if os.environ.get("GIT_PUSH_CERT_STATUS") == "G" and os.environ.get("GIT_PUSH_CERT_NONCE_STATUS") in ("OK", "SLOP"):
        return os.environ.get("GIT_PUSH_CERT_SIGNER") or None
    return None


def principals(common_dir: str) -> set[str]:
    try:
        with open(os.path.join(common_dir, SIGNERS), encoding="utf-8") as fh:
            return {p for line in fh if line.strip() and not line.startswith("#") for p in line.split()[0].split(",")}
    except OSError:
        return set()


def base_mode(common_dir: str) -> str:
    """What moves the base: fleet.basePush, which `git fleet-init --server` sets (a server set up
    before it existed stays open until init runs again there)."""
    mode = plumbing.out(["config", "--get", "fleet.basePush"], common_dir, check=False) or "any"
    if mode not in MODES:
        raise FleetError(f"fleet.basePush is {mode!r} in {common_dir}/config; it must be one of {', '.join(MODES)}",
                         "fix it on the server: git config fleet.basePush merges")
    return mode


def refusals(compiled: check.Compiled, updates: Sequence[tuple[str, str, str]], cwd: str, common_dir: str
             ) -> list[FleetError]:
    """Why the server refuses these ref updates (ref, new, old), apart from each agent's zone."""
    who = signer()
    if who == ORCHESTRATOR:
        return []
    keys = principals(common_dir)
    base = f"refs/heads/{compiled.base}"
    branches = {f"refs/heads/{a.branch}": a for a in compiled.agents.values()}
    errors = []
    for ref, new, old in updates:
        if ref.startswith("refs/replace/"):
            errors.append(FleetError(f"push of {ref} rejected: a replacement object would show a commit as "
                                     "another to whoever reads it", "only the orchestrator's signed push makes one"))
            continue
        if ref != base and ref not in branches:
            continue
        what = "the base" if ref == base else "an agent's branch"
        if old != plumbing.ZERO_OID and new == plumbing.ZERO_OID:
            errors.append(FleetError(f"deleting {ref[11:]} rejected: it is {what}, which only moves forward here",
                                     _REWRITE_HINT))
            continue
        if old != plumbing.ZERO_OID and not plumbing.is_ancestor(old, new, cwd):
            errors.append(FleetError(f"force-push of {ref[11:]} rejected: it is {what}, which only moves forward "
                                     f"here ({old[:12]} is not in {new[:12]})", _REWRITE_HINT))
            continue
        if ref in branches:
            agent = branches[ref]
            if AGENT + agent.name in keys and who != AGENT + agent.name:
                errors.append(FleetError(f"push of {ref[11:]} rejected: it must be signed with agent "
                                         f"'{agent.name}''s key (or the orchestrator's)",
                                         "push with --signed (gpg.format = ssh, user.signingKey = its key)"))
            continue
        mode = base_mode(common_dir)
        if mode == "any":
            continue
        if mode == "signed":
            errors.append(FleetError(f"push of {compiled.base} rejected: only the orchestrator's signed pushes move "
                                     "it here", "push with --signed, with the key given to git fleet-init --server "
                                     "--orchestrator-key"))
            continue
        tips = {r: n for r, n, _o in updates if n != plumbing.ZERO_OID}
        errors += _merges_only(compiled, old, new, cwd,
                               keyed={a.branch: tips.get(f"refs/heads/{a.branch}", f"refs/heads/{a.branch}")
                                      for a in compiled.agents.values() if AGENT + a.name in keys})
    return errors


_REWRITE_HINT = ("fetch, and build on what is there (git pull); the orchestrator's signed push, or the repository's "
                 "owner on the server itself, may rewrite it")


def _committed_agents(common_dir: str, base: str) -> set[str] | None:
    """The agents of the base's committed configuration here, or None when there is none (or it
    does not read)."""
    from . import config  # (not above: the pre-receive hook imports this module, and never reads the TOML here)

    try:
        cfg = config.committed(common_dir, base)
    except FleetError:
        return None
    return set(cfg.agents) if cfg is not None else None


def _merges_only(compiled: check.Compiled, old: str, new: str, cwd: str, keyed: dict[str, str]) -> list[FleetError]:
    """Each commit the push adds to the base's first-parent line must merge an agent's branch,
    held to that agent's zone, with no change of its own outside it; the line must go on from
    the base as it is here (not from an older commit of it, which would take later work back).
    keyed: the branches of agents with a key, and what each holds after this push: a merge
    naming one of them must merge what that branch holds (its signed pushes)."""
    base = compiled.base
    hint = (f"on this server {base} moves only by merges of agent branches (git fleet-merge), unless the push is "
            "signed by the orchestrator's key (git fleet-init --server --orchestrator-key) or the owner opens it "
            "(git config fleet.basePush any)")
    raw = plumbing.out(["rev-list", "--first-parent", "--parents", new, *([f"^{old}"] if old != plumbing.ZERO_OID else [])],
                       cwd)
    errors = []
    merged: list[check.CompiledAgent] = []
    for line in raw.splitlines():
        commit, *parents = line.split()
        if len(parents) == 2 and old != plumbing.ZERO_OID and plumbing.is_ancestor(parents[1], old, cwd):
            # a merge of what the base here has already (the server's base merged into a clone's):
            # it brings nothing new, and may change nothing of its own
            own = plumbing.history([commit], parents, cwd).get(commit, ([], []))[1]
            if own:
                errors.append(FleetError(f"push of {base} rejected: {commit[:12]} merges {base} as it is here and "
                                         f"changes {check.quote(own[0])} on its own", hint))
            continue
        subject = plumbing.out(["log", "-1", "--format=%s", commit], cwd)
        m = _MERGE_SUBJECT.match(subject) if len(parents) == 2 else None
        name = (m.group(1) or m.group(2)) if m else ""
        agent = next((a for a in compiled.agents.values() if name == a.branch or name.endswith("/" + a.branch)), None)
        if agent is None:
            errors.append(FleetError(f"push of {base} rejected: {commit[:12]} ({subject[:60]}) is not a merge of "
                                     "an agent's branch", hint))
            continue
        holds = keyed.get(agent.branch)
        refused = _not_as_signed(agent, commit, parents, holds, base, cwd) if holds is not None else None
        if refused is not None:
            errors.append(refused)
            continue
        merged.append(agent)
        # all it changes in the base, its own edits and what git carried through a rename included
        violations = check.check_paths(compiled, agent, [("changed", p) for p in
                                                         plumbing.changed_paths(parents[0], commit, cwd)], commit)
        violations += check.check_range(compiled, agent, [parents[1]], [parents[0], f"refs/heads/{base}"], cwd)
        if violations:
            errors.append(check.describe(agent, violations, f"push of {base} rejected ({commit[:12]} merges "
                                                            f"{agent.branch})"))
    if not errors and old != plumbing.ZERO_OID:
        refused = _taken_back(compiled, merged, old, new, cwd, hint)
        if refused is not None:
            errors.append(refused)
    return errors


def _not_as_signed(agent: check.CompiledAgent, commit: str, parents: list[str], holds: str, base: str,
                   cwd: str) -> FleetError | None:
    """A keyed agent's work reaches the base as it signed it, merged as git merges it: why this
    merge of its branch does not (None: it does). `holds`: what its branch holds after the push."""
    if not plumbing.is_ancestor(parents[1], holds, cwd):
        return FleetError(f"push of {base} rejected: {commit[:12]} names {agent.branch} but merges "
                          f"{parents[1][:12]}, which {agent.branch} here does not hold",
                          f"push {agent.branch} first (signed with agent '{agent.name}''s key)")
    own = plumbing.history([commit], parents, cwd).get(commit, ([], []))[1]
    if own:
        return FleetError(f"push of {base} rejected: {commit[:12]} merges {agent.branch} but changes "
                          f"{check.quote(own[0])} otherwise than git's merge of it would",
                          f"merge {agent.branch} as it is (git fleet-merge {agent.name})")
    return None


def _taken_back(compiled: check.Compiled, merged: list[check.CompiledAgent], old: str, new: str, cwd: str,
                hint: str) -> FleetError | None:
    """The push as a whole: a line of merges that goes on from an older commit of the base than
    this one would take back what came since, though each merge is fine on its own."""
    for path in plumbing.changed_paths(old, new, cwd):
        if not any(not check.check_paths(compiled, a, [("changed", path)]) for a in merged):
            return FleetError(f"push of {compiled.base} rejected: it changes {check.quote(path)}, which no agent it "
                              "merges owns (a line of merges from an older commit of the base?)", hint)
    return None


def _signers(given: Sequence[tuple[str, str]]) -> list[str]:
    """Allowed-signers lines for (principal, public key file) pairs; UsageError naming a file that
    is not an SSH public key."""
    lines = []
    for principal, path in given:
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as fh:
                found = [line.split()[:2] for line in fh if line.strip() and not line.startswith("#")]
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read the public key {path}: {getattr(e, 'strerror', None) or e}") from None
        if not found or not all(len(k) == 2 and k[0].startswith(("ssh-", "ecdsa-", "sk-")) for k in found):
            raise UsageError(f"{path} is not an SSH public key (as ssh-keygen writes one: ssh-ed25519 AAAA...)",
                             "give the .pub file of the key that signs the pushes")
        lines += [f"{principal} {kind} {key}" for kind, key in found]
    return lines


def install(common_dir: str, orchestrator_keys: Sequence[str], agent_keys: Sequence[tuple[str, str]],
            base_push: str | None, base: str | None = None,
            signed_machines: tuple[bool, Sequence[str]] = (False, ())) -> list[str]:
    """Set a bare repository up for the rules above: git's object checks at the door, push
    certificates checked against the keys given (added to those kept), the base's mode; with
    `signed_machines` (and the keys of machines enrolled: then only those join), the fleet's shared
    refs taken only in pushes its machines signed (server_shared.py). Returns notes on what holds."""
    signed, machine_keys = signed_machines[0] or bool(signed_machines[1]), signed_machines[1]
    lines = _signers([(ORCHESTRATOR, k) for k in orchestrator_keys] + [(AGENT + n, k) for n, k in agent_keys]
                     + [(MACHINE, k) for k in machine_keys])
    committed = _committed_agents(common_dir, base or plumbing.server_base(common_dir))
    unknown = [n for n, _ in agent_keys if committed is not None and n not in committed]
    if unknown:
        raise UsageError(f"no agent named '{unknown[0]}' in this server's {check.CONFIG_NAME}",
                         "agents: " + (", ".join(sorted(committed or ())) or "none yet"))
    # (all checked: from here it only writes)
    if base is not None:
        plumbing.git(["config", "fleet.base", base], common_dir)
    plumbing.git(["config", "receive.fsckObjects", "true"], common_dir)
    if lines or signed:
        signers = os.path.join(common_dir, SIGNERS)
        os.makedirs(os.path.dirname(signers), exist_ok=True)
        kept = []
        try:
            with open(signers, encoding="utf-8") as fh:
                kept = [line.rstrip("\n") for line in fh]
        except OSError:
            pass  # none yet: the list starts empty
        # (with it, git checks every push certificate: one signed by a key it does not list is
        # good with that key's fingerprint, which a machine's registered key is matched against)
        durable.replace(signers, "".join(f"{line}\n" for line in dict.fromkeys(kept + lines)))
        plumbing.git(["config", "gpg.ssh.allowedSignersFile", signers], common_dir)
        if not plumbing.out(["config", "--get", "receive.certNonceSeed"], common_dir, check=False):
            plumbing.git(["config", "receive.certNonceSeed", os.urandom(16).hex()], common_dir)
        if not plumbing.out(["config", "--get", "receive.certNonceSlop"], common_dir, check=False):
            plumbing.git(["config", "receive.certNonceSlop", "300"], common_dir)  # (stateless HTTP: two requests)
    if signed:
        plumbing.git(["config", "fleet.signedMachines", "true"], common_dir)
    machines_said = (["the fleet's shared refs (refs/fleet/) are taken only in pushes signed by the machine they "
                      "speak for (fleet.signedMachines)"]
                     if plumbing.out(["config", "--type=bool", "--get", "fleet.signedMachines"], common_dir,
                                     check=False) == "true" else [])
    keys = principals(common_dir)
    if base_push is None and not plumbing.out(["config", "--get", "fleet.basePush"], common_dir, check=False):
        base_push = "signed" if ORCHESTRATOR in keys else "merges"
    if base_push is not None:
        plumbing.git(["config", "fleet.basePush", base_push], common_dir)
    mode = base_mode(common_dir)
    said = {"merges": "moves only by merges of agent branches, each held to the agent's zone",
            "signed": "moves only by the orchestrator's signed pushes", "any": "is open to every push"}[mode]
    return [f"the base {said} (fleet.basePush = {mode}); it and the agents' branches are never deleted or "
            "rewritten by a push" + (", except by the orchestrator's signed push" if ORCHESTRATOR in keys else ""),
            *machines_said]
