"""Teleport: an agent's whole state through an ordinary git remote, and back.

A snapshot is one commit, shaped the way `git stash` shapes its entries, so git's own tools
understand it too (`git stash apply --index SNAPSHOT` works in any worktree):

    snapshot      tree: the work tree's tracked files as they are on disk
    ├─ parent 1   the agent's branch tip
    ├─ parent 2   tree: the index (staged changes), parent: the branch tip
    └─ parent 3   tree: the untracked, not ignored files (only if there are any)

snapshot.py makes the trees and writes them back, byte for byte. The message carries the agent's
settings and claimed tasks as JSON. It is pushed to refs/fleet/teleport/AGENT on the remote; the
same ref here remembers the snapshot this clone last sent or received, which is how a pull knows
whether the local worktree moved on since. What a forced pull replaces is kept, every time, at
refs/fleet/backups/AGENT/N.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, agents, brief, lock
from .config import Agent
from .errors import FleetError, GitError, UsageError
from .gateway.plumbing import ZERO_OID, git
from .moves import gone_worktree
from .processes import working_in
from .snapshot import State, capture_trees, git_path, restore

FORMAT = 2  # 2: changed and untracked files are kept as the bytes on disk (snapshot.py)
REFS = "refs/fleet/teleport/"
BACKUPS = "refs/fleet/backups/"
OLD_BACKUP = "refs/fleet/teleport-backup/"  # one backup per agent, before FORMAT 2
SUBJECT = "fleet teleport: "


@dataclass
class Snapshot:
    commit: str
    state: State
    meta: dict[str, Any]


@dataclass
class Outcome:
    agent: str
    remote: str
    snapshot: str
    branch: str
    counts: dict[str, int]
    tasks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    worktree: str = ""
    head: str = ""  # the branch tip it carries
    created: bool = False  # pull: the agent or its worktree was made here
    unchanged: bool = False


def _out(args: list[str], cwd: Path, env: dict[str, str] | None = None, input: bytes | None = None) -> str:
    return git(args, cwd, env=env, input=input).stdout.decode("utf-8", "surrogateescape").strip()


def _z(raw: bytes) -> list[str]:
    return [p.decode("utf-8", "surrogateescape") for p in raw.split(b"\0") if p]


IN_PROGRESS = {"MERGE_HEAD": "a merge", "rebase-merge": "a rebase", "rebase-apply": "a rebase or am",
               "CHERRY_PICK_HEAD": "a cherry-pick", "REVERT_HEAD": "a revert", "BISECT_LOG": "a bisect"}


def capture(agent: Agent, worktree: Path, base: str, scratch: Path) -> State:
    """The worktree's state as trees, without touching the worktree or its index; refused where
    a snapshot could not carry all of it."""
    for name, what in IN_PROGRESS.items():
        if git_path(worktree, name).exists():
            raise FleetError(f"agent '{agent.name}' is in the middle of {what} in {worktree}",
                             "finish it or abort it first; a snapshot cannot carry it")
    head_ref = git(["symbolic-ref", "-q", "HEAD"], worktree, check=False).stdout.decode().strip()
    if head_ref != f"refs/heads/{agent.branch}":
        raise FleetError(f"agent '{agent.name}' is not on its branch {agent.branch} in {worktree}",
                         f"switch back first: git -C {worktree} switch {agent.branch}")
    if git(["ls-files", "--unmerged"], worktree).stdout:
        raise FleetError(f"agent '{agent.name}' has unresolved conflicts in {worktree}",
                         "resolve them (or git restore --staged) first")
    _refuse_other_repositories(agent, worktree, base)
    return capture_trees(worktree, scratch)


def _refuse_other_repositories(agent: Agent, worktree: Path, base: str) -> None:
    """Work inside a submodule, or in a repository of its own that sits untracked in the worktree,
    lives in another repository's objects: a snapshot of this one cannot carry it."""
    raw = git(["status", "--porcelain=v2", "-z", "--ignore-submodules=none", "--untracked-files=all"], worktree,
              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout
    problems = []
    for entry in _z(raw):
        fields = entry.split(" ")
        if fields[0] in ("1", "2") and fields[2].startswith("S") and fields[2] != "S...":
            flags = fields[2]
            what = [w for flag, w in zip(flags[1:], ("commits", "modified files", "untracked files"), strict=True)
                    if flag != "."]
            path = entry.split(" ", 8)[8] if fields[0] == "1" else entry.split(" ", 9)[9]
            problems.append(f"  submodule {path}: {', '.join(what)} of its own")
        elif fields[0] == "?" and entry.endswith("/"):
            problems.append(f"  {entry[2:]}: a repository of its own, not tracked here")
    problems += _unpublished_submodule_commits(worktree, base)
    if problems:
        raise FleetError(f"agent '{agent.name}' has work in {worktree} that belongs to other repositories, "
                         "which a snapshot cannot carry:\n" + "\n".join(problems),
                         "commit it in the submodule and push it to the submodule's remote, then record the new "
                         "submodule commit on the agent's branch (or undo it: git submodule update);\n"
                         "a repository of its own stays on this machine once it is ignored (.git/info/exclude)")


def _unpublished_submodule_commits(worktree: Path, base: str) -> list[str]:
    """Submodule commits the snapshot would point at (staged, or committed on the agent's branch)
    where the base points elsewhere, and that no remote of the submodule has, as far as its
    remote-tracking branches know: elsewhere they could not be checked out."""
    problems = []
    for item in _z(git(["ls-files", "-s", "-z"], worktree).stdout):
        meta, _, path = item.partition("\t")
        mode, oid, _stage = meta.split()
        sub = worktree / path
        if mode != "160000" or not (sub / ".git").exists():
            continue
        at_base = git(["rev-parse", "-q", "--verify", f"refs/heads/{base}:{path}"], worktree, check=False)
        if at_base.stdout.decode().strip() == oid:
            continue  # as the base has it: published with the base
        known = git(["for-each-ref", "--contains", oid, "--count=1", "refs/remotes/"], sub, check=False)
        if known.returncode != 0 or not known.stdout.strip():
            problems.append(f"  submodule {path}: commit {oid[:12]} is on no remote of the submodule")
    return problems


def counts(state: State, cwd: Path) -> dict[str, int]:
    def changed(a: str, b: str) -> int:
        return len(_z(git(["diff-tree", "-r", "-z", "--name-only", "--no-renames", a, b], cwd).stdout))

    head_tree = _out(["rev-parse", f"{state.head}^{{tree}}"], cwd)
    untracked = len(_z(git(["ls-tree", "-r", "-z", "--name-only", state.untracked], cwd).stdout)) if state.untracked else 0
    return {"staged": changed(head_tree, state.index), "unstaged": changed(state.index, state.work), "untracked": untracked}


def write(state: State, meta: dict[str, Any], cwd: Path) -> str:
    """The snapshot commit (stash-shaped); no ref is touched."""
    branch = meta["branch"]
    index_commit = _out(["commit-tree", state.index, "-p", state.head, "-m", f"index on {branch}"], cwd)
    parents = ["-p", state.head, "-p", index_commit]
    if state.untracked:
        parents += ["-p", _out(["commit-tree", state.untracked, "-m", f"untracked files on {branch}"], cwd)]
    meta = {**meta, "filtered": list(state.filtered or ())}
    message = f"{SUBJECT}{meta['agent']} from {meta['host']}\n\n{json.dumps(meta, indent=1, sort_keys=True)}\n"
    return _out(["commit-tree", state.work, *parents, "-F", "-"], cwd, input=message.encode())


def read(commit: str, cwd: Path, agent: str | None = None) -> Snapshot:
    raw = git(["cat-file", "commit", commit], cwd).stdout.decode("utf-8", "surrogateescape")
    header, _, message = raw.partition("\n\n")
    fields = [line.split(" ", 1) for line in header.splitlines()]
    tree = next(v for k, v in fields if k == "tree")
    parents = [v for k, v in fields if k == "parent"]
    subject, _, body = message.partition("\n\n")
    try:
        meta: dict[str, Any] = json.loads(body)
        if not subject.startswith(SUBJECT) or not isinstance(meta, dict) or len(parents) < 2:
            raise ValueError
    except ValueError:
        raise FleetError(f"{commit[:12]} is not a git-fleet snapshot") from None
    version = meta.get("format")
    if not isinstance(version, int) or version > FORMAT:
        raise FleetError(f"the snapshot of '{meta.get('agent', agent)}' was made by a newer git-fleet "
                         f"({meta.get('version', '?')}, snapshot format {version}; this one reads {FORMAT})",
                         "upgrade git-fleet on this machine, then pull again")
    if agent is not None and meta.get("agent") != agent:
        raise FleetError(f"{commit[:12]} is a snapshot of '{meta.get('agent')}', not of '{agent}'")
    index = _out(["rev-parse", f"{parents[1]}^{{tree}}"], cwd)
    untracked = _out(["rev-parse", f"{parents[2]}^{{tree}}"], cwd) if len(parents) > 2 else None
    # format 1 stored every file through git's clean conversion: it goes back through git's checkout
    filtered = tuple(meta.get("filtered", ())) if version >= 2 else None
    return Snapshot(commit, State(parents[0], index, tree, untracked, filtered), meta)


# -- remotes ---------------------------------------------------------------------------------------

def remote_of(cwd: Path, given: str | None, base: str) -> str:
    """The remote to use: the one given (a name, a URL or a path), else the base branch's, else
    origin, else the only one."""
    names = _out(["remote"], cwd).split()
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
        raise FleetError(f"cannot reach remote '{remote}': {_last_line(proc.stderr)}",
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
        raise FleetError(f"cannot fetch from '{remote}': {_last_line(proc.stderr)}")


def push(cwd: Path, remote: str, agent: str, snapshot: str, expect: str | None, given: str | None = None) -> None:
    """Park the snapshot on the remote, only if the remote still holds `expect` (None: nothing).
    `given`: the --remote the user gave, for the hints."""
    ref = REFS + agent
    # not --no-verify: pre-push hooks run as for any push, and git-lfs uploads what the snapshot
    # points at from there (the fleet's own pre-push checks only agents' branches)
    proc = git(["push", "--quiet", f"--force-with-lease={ref}:{expect or ''}", remote,
                f"{snapshot}:{ref}"], cwd, check=False)
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
    raise FleetError(f"remote '{remote}' refused the snapshot of '{agent}': {_last_line(proc.stderr)}",
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


def _last_line(raw: bytes) -> str:
    lines = [ln.strip() for ln in raw.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1].removeprefix("fatal: ").removeprefix("error: ") if lines else "git failed"


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
    raise FleetError(f"cannot keep what is here at {BACKUPS}{agent}/N: {_last_line(made.stderr)}; nothing was changed",
                     f"look at `git for-each-ref {BACKUPS}{agent}`")


def meta_for(fleet: Any, agent: Agent, remote: str) -> dict[str, Any]:
    tasks = []
    for t in brief.claimed_tasks(fleet, agent):
        tasks.append({"id": t.id, "file": t.path.name, "spec": t.path.read_text(encoding="utf-8", errors="replace"),
                      "title": t.title, "expires": t.expires})
    settings = {k: getattr(agent, k) for k in Agent.SESSION_KEYS if getattr(agent, k) is not None}
    return {"format": FORMAT, "version": __version__, "agent": agent.name, "branch": agent.branch,
            "base": fleet.config.base, "zone": list(agent.zone), "settings": settings, "env": dict(agent.env),
            "host": socket.gethostname(), "time": int(time.time()), "remote": remote, "tasks": tasks}


# -- the three operations ---------------------------------------------------------------------------

def send(fleet: Any, name: str, given_remote: str | None, *, force: bool = False) -> Outcome:
    agent = fleet.config.agent(name)
    main = fleet.main
    where = brief.require_worktree(fleet, agent)
    remote = remote_of(main, given_remote, fleet.config.base)
    with fleet.repo.scratch() as space, lock.hold(fleet.repo.common_dir, fleet.waiting):
        state = capture(agent, where, fleet.config.base, space)  # (no sync or merge moves it meanwhile)
    meta = meta_for(fleet, agent, remote)
    snapshot = write(state, meta, main)
    parked = remote_refs(main, remote, name).get(name)
    last = local_ref(main, name)
    if parked is not None and parked != last and not force:
        raise FleetError(f"remote '{remote}' holds a snapshot of '{name}' ({parked[:12]}) that this clone has not seen",
                         f"bring it here first (git fleet-teleport pull {name}), or replace it with --force")
    push(main, remote, name, snapshot, parked, given_remote)
    remember(main, name, snapshot)
    return Outcome(name, remote, snapshot, agent.branch, counts(state, main), [t["file"] for t in meta["tasks"]],
                   worktree=str(where), head=state.head)


def parked(fleet: Any, given_remote: str | None) -> list[dict[str, Any]]:
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


def receive(fleet: Any, name: str, given_remote: str | None, *, force: bool = False, path: str | None = None) -> Outcome:
    """Make the agent here hold the snapshot on the remote. Only a worktree this repository has
    registered for the agent is ever restored into; without one, one is made (at --path, or where
    the configuration puts it, if nothing is there) or the pull is refused."""
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
    with fleet.repo.scratch() as space:
        agent = _bring_here(fleet, agent, snap, out, force, path, space)
    remember(main, name, oid)
    out.tasks = _claim_tasks(fleet, agent, meta.get("tasks", []), out)
    brief.write_brief(fleet, agent)
    out.worktree = str(fleet.locate(agent))
    if _has_submodules(state, main):
        out.warnings.append(f"the agent's branch has submodules: git -C {shlex.quote(out.worktree)} "
                            "submodule update --init")
    return out


def _bring_here(fleet: Any, agent: Agent | None, snap: Snapshot, out: Outcome, force: bool, path: str | None,
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


def _running_here(fleet: Any, name: str) -> bool:
    from .sessions import Sessions

    try:
        return bool(Sessions(fleet).running([name]))
    except FleetError:
        return False  # no tmux here: nothing of the fleet's runs in it


def _has_submodules(state: State, cwd: Path) -> bool:
    return b"160000 commit " in git(["ls-tree", "-r", state.work], cwd).stdout


def _branch_check(fleet: Any, branch: str, head: str) -> None:
    """Refuse if the local branch has commits the snapshot's head lacks (moving it would lose them)."""
    tip = fleet.repo.branch_tip(branch)
    if tip is not None and not fleet.repo.is_ancestor(tip, head):
        raise FleetError(f"both sides moved on: branch {branch} here has commits that the snapshot lacks",
                         f"keep them under another name (git branch -m {branch} {branch}-here), then pull again")


def _register(fleet: Any, meta: dict[str, Any], state: State, out: Outcome, path: str | None, space: Path) -> Agent:
    """A new agent here, as the snapshot describes it: registered, with its branch and worktree."""
    name, branch = meta["agent"], meta["branch"]
    _branch_check(fleet, branch, state.head)
    settings = {k: v for k, v in meta.get("settings", {}).items() if k in Agent.SESSION_KEYS}
    had_branch = fleet.repo.branch_tip(branch) is not None
    agent, report = agents.add(fleet, name, meta.get("zone") or [], branch=branch, base=state.head, session=settings,
                              env=tuple(sorted(meta.get("env", {}).items())), path=path)
    out.warnings += [w for w in report.warnings if "--base" not in w]
    try:
        _fill(brief.require_worktree(fleet, agent), state, space)
    except BaseException:
        agents.remove(fleet, name, force=True, keep_branch=had_branch)  # as it was before the pull
        if not had_branch and fleet.repo.branch_tip(branch) is not None:
            fleet.repo.delete_branch(branch, fleet.repo.branch_tip(branch))
        raise
    out.created = True
    return agent


def _recreate_worktree(fleet: Any, agent: Agent, state: State, out: Outcome, path: str | None, space: Path) -> None:
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
        _fill(where, state, space)
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


def _fill(where: Path, state: State, space: Path) -> None:
    """A fresh worktree on the agent's branch made to hold `state`; the branch, if it was already
    here, is behind the snapshot (checked by _branch_check) and fast-forwards."""
    if _out(["rev-parse", "HEAD"], where) != state.head:
        git(["merge", "--quiet", "--ff-only", state.head], where)
    restore(state, where, space)


def _bring_up_to_date(fleet: Any, agent: Agent, where: Path, snap: Snapshot, out: Outcome, force: bool,
                      space: Path) -> None:
    """Replace the worktree's state by the snapshot's, if nothing made here since the last
    teleport would be lost (or, with force, after keeping it at refs/fleet/backups/AGENT/N)."""
    main, state = fleet.main, snap.state
    here = capture(agent, where, fleet.config.base, space)
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
    clean = here.clean(_out(["rev-parse", f"{here.head}^{{tree}}"], main))
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
    if not capture(agent, where, fleet.config.base, space).same(here):  # (a last look, just before)
        raise FleetError(f"{where} changed while it was being pulled into; nothing was replaced",
                         "stop whatever writes there, then pull again")
    git(["reset", "--quiet", "--hard", state.head], where)
    git(["clean", "--quiet", "-d", "--force"], where)
    restore(state, where, space)


# processes that sit in a directory without writing to it (what they run shows up on its own)


def _claim_tasks(fleet: Any, agent: Agent, tasks: list[dict[str, Any]], out: Outcome) -> list[str]:
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
