"""A snapshot's way through a remote: which remote, what is parked there, fetching it, pushing
with a lease (and, when another clone's push landed first, saying whose), the ref that remembers
here the snapshot last sent or received, and the backups a forced pull keeps."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from ..errors import FleetError, GitError, UsageError
from ..gateway import plumbing
from ..gateway.meeting import Update, reason, signing
from ..gateway.plumbing import ZERO_OID, git
from .commit import read

REFS = "refs/fleet/teleport/"
BACKUPS = "refs/fleet/backups/"
OLD_BACKUP = "refs/fleet/teleport-backup/"  # one backup per agent, before FORMAT 2


def remote_of(cwd: Path, given: str | None, base: str) -> str:
    """The remote to use: the one given (a name, a URL or a path), else the base branch's, else
    origin, else the only one."""
    names = plumbing.out(["remote"], cwd).split()
    if given:
        looks_like_url = "://" in given or ":" in given or os.sep in given or os.path.exists(given)
        if given not in names and not looks_like_url:
            raise UsageError(f"unknown remote '{given}'",
                             "known remotes: " + (", ".join(names) if names else "none") + "; or give a URL or a path")
        return os.path.abspath(given) if given not in names and os.path.exists(given) else given
    configured = git(["config", "--get", f"branch.{base}.remote"], cwd, check=False).stdout.decode().strip()
    for candidate in (configured, "origin"):
        if candidate and candidate in names:
            return candidate
    if len(names) == 1:
        return names[0]
    raise UsageError("which remote?" if names else "this repository has no remote",
                     "give --remote NAME (or a URL or path)")


def remote_refs(cwd: Path, remote: str, agent: str | None = None) -> dict[str, str]:
    """Snapshots parked on the remote: agent -> commit."""
    pattern = REFS + (agent if agent else "*")
    proc = git(["ls-remote", "--refs", remote, pattern], cwd, check=False)
    if proc.returncode != 0:
        raise FleetError(f"cannot reach remote '{remote}': {reason(proc.stderr)}",
                         "check the remote with `git ls-remote REMOTE`")
    found = {}
    for line in proc.stdout.decode().splitlines():
        oid, _, ref = line.partition("\t")
        found[ref.removeprefix(REFS)] = oid
    return found


def fetch(cwd: Path, remote: str, agents: list[str]) -> None:
    proc = git(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote,
                *(f"{REFS}{a}" for a in agents)], cwd, check=False)
    if proc.returncode != 0:
        raise FleetError(f"cannot fetch from '{remote}': {reason(proc.stderr)}")


def push(cwd: Path, remote: str, agent: str, snapshot: str, expect: str | None, given: str | None = None,
         also: Update | None = None, key: Path | None = None) -> None:
    """Park the snapshot on the remote, only if the remote still holds `expect` (None: nothing);
    with `also` (the agent's hold handed off, holds.py) in the same atomic push. `given`: the
    --remote the user gave, for the hints."""
    ref = REFS + agent
    # not --no-verify: pre-push hooks run as for any push, and git-lfs uploads what the snapshot
    # points at from there (the fleet's own pre-push checks only agents' branches)
    extra = ["--atomic", f"--force-with-lease={also.ref}:{also.old or ''}"] if also else []
    proc = git([*signing(key), "push", "--quiet", *extra, f"--force-with-lease={ref}:{expect or ''}", remote,
                f"{snapshot}:{ref}", *([f"{also.new or ''}:{also.ref}"] if also else [])], cwd, check=False)
    if proc.returncode == 0:
        return
    # Another push of the agent's snapshot that landed first fails ours either here (the lease:
    # "stale info") or on the remote, which updates the ref only from the value we sent as its old
    # one (receive-pack: "cannot lock ref", "failed to update ref"). Told apart from a refusal by
    # what the remote holds now, not by git's wording.
    try:
        now = remote_refs(cwd, remote, agent).get(agent)
    except FleetError:
        now = expect  # unreachable now: nothing to tell apart
    if now == snapshot:
        return  # ours is there after all (the same snapshot, sent twice at once)
    if now != expect:
        raise _pushed_first(cwd, remote, agent, now, given)
    if "stale info" in proc.stderr.decode("utf-8", "replace"):
        raise FleetError(f"the remote's snapshot of '{agent}' changed while sending; nothing was replaced",
                         f"pull it first (git fleet-teleport pull {agent}), or push again with --force")
    raise FleetError(f"remote '{remote}' refused the snapshot of '{agent}': {reason(proc.stderr)}",
                     "nothing changed on either side; check the remote's hooks and your access to it")


def _pushed_first(cwd: Path, remote: str, agent: str, now: str | None, given: str | None) -> FleetError:
    """The error for a push that lost the race to another clone's push of the same agent."""
    opt = f" --remote {shlex.quote(given)}" if given else ""
    if now is None:
        return FleetError(f"the snapshot of '{agent}' on '{remote}' was deleted while this one was being sent; "
                          "nothing was sent, and this worktree is unchanged", f"push again: git fleet-teleport push {agent}{opt}")
    sent = ""
    try:
        fetch(cwd, remote, [agent])
        meta = read(now, cwd, agent).meta
        if meta.get("host"):
            sent += f" from {meta['host']}"
        if isinstance(meta.get("time"), int):
            sent += " at " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(meta["time"]))
    except (FleetError, GitError):
        pass  # said without where and when
    return FleetError(f"another clone pushed a snapshot of '{agent}' to '{remote}' first ({now[:12]}{',' if sent else ''}"
                      f"{sent}); this one was not sent: nothing was replaced, and this worktree is unchanged",
                      f"take that one: git fleet-teleport pull {agent}{opt} (if this worktree changed since, pull refuses "
                      "and says how to keep both);\n"
                      f"or replace it with this worktree's state: git fleet-teleport push {agent}{opt} --force")


def local_ref(cwd: Path, agent: str) -> str | None:
    proc = git(["rev-parse", "-q", "--verify", f"{REFS}{agent}^{{commit}}"], cwd, check=False)
    return proc.stdout.decode().strip() or None


def remember(cwd: Path, agent: str, snapshot: str) -> None:
    """The snapshot this clone last sent or received (a reflog keeps the ones before it)."""
    git(["update-ref", "--create-reflog", "-m", "fleet teleport", REFS + agent, snapshot], cwd)


def backups(cwd: Path, agent: str) -> list[str]:
    """The refs that keep what forced pulls replaced, oldest first."""
    raw = git(["for-each-ref", "--format=%(refname)", f"{BACKUPS}{agent}/"], cwd).stdout.decode().split()
    return sorted(raw, key=lambda ref: int(ref.rsplit("/", 1)[1]) if ref.rsplit("/", 1)[1].isdigit() else 0)


def keep(cwd: Path, agent: str, snapshot: str) -> str:
    """Keep `snapshot` at a ref of its own, refs/fleet/backups/AGENT/N, never replacing one: every
    backup stays reachable. A backup an older git-fleet kept at refs/fleet/teleport-backup/AGENT
    becomes number 1."""
    old = git(["rev-parse", "-q", "--verify", f"{OLD_BACKUP}{agent}"], cwd, check=False).stdout.decode().strip()
    if old:
        git(["update-ref", "--create-reflog", "--stdin"], cwd,
            input=f"start\ncreate {BACKUPS}{agent}/1 {old}\ndelete {OLD_BACKUP}{agent} {old}\ncommit\n".encode())
    for _ in range(100):
        taken = backups(cwd, agent)
        ref = f"{BACKUPS}{agent}/{int(taken[-1].rsplit('/', 1)[1]) + 1 if taken else 1}"
        made = git(["update-ref", "--create-reflog", "-m", "fleet teleport: backup", ref, snapshot, ZERO_OID], cwd,
                   check=False)
        if made.returncode == 0:
            return ref
        if git(["rev-parse", "-q", "--verify", ref], cwd, check=False).returncode != 0:
            break  # it failed for another reason than a pull that took this number meanwhile
    raise FleetError(f"cannot keep what is here at {BACKUPS}{agent}/N: {reason(made.stderr)}; nothing was changed",
                     f"look at `git for-each-ref {BACKUPS}{agent}`")
