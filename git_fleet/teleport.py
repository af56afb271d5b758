"""Teleport: an agent's whole state through an ordinary git remote, and back.

A snapshot is one commit, shaped the way `git stash` shapes its entries, so git's own tools
understand it too (`git stash apply --index SNAPSHOT` works in any worktree):

    snapshot      tree: the work tree's tracked files as they are on disk
    ├─ parent 1   the agent's branch tip
    ├─ parent 2   tree: the index (staged changes), parent: the branch tip
    └─ parent 3   tree: the untracked, not ignored files (only if there are any)

Its message carries the agent's settings and claimed tasks as JSON. It is pushed to
refs/fleet/teleport/AGENT on the remote; the same ref here remembers the snapshot this clone
last sent or received, which is how a pull knows whether the local worktree moved on since.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .config import Agent
from .errors import FleetError, GitError, UsageError
from .plumbing import git

FORMAT = 1
REFS = "refs/fleet/teleport/"
BACKUP = "refs/fleet/teleport-backup/"
SUBJECT = "fleet teleport: "


@dataclass(frozen=True)
class State:
    """What a worktree holds: the branch tip, the index, the tracked files on disk, the untracked files."""

    head: str
    index: str  # tree
    work: str  # tree
    untracked: str | None  # tree, None when there are none

    def clean(self, head_tree: str) -> bool:
        return self.index == head_tree and self.work == head_tree and self.untracked is None


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


@contextmanager
def _scratch_index(where: Path, seed: Path | None = None) -> Iterator[dict[str, str]]:
    """An environment whose GIT_INDEX_FILE is a private index (a copy of `seed`, or empty)."""
    fd, path = tempfile.mkstemp(prefix="fleet-index-", dir=where)
    os.close(fd)
    try:
        if seed is not None and seed.exists():
            shutil.copyfile(seed, path)
        else:
            os.unlink(path)
        yield {**os.environ, "GIT_INDEX_FILE": path}
    finally:
        for p in (path, path + ".lock"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _git_path(worktree: Path, name: str) -> Path:
    return Path(_out(["rev-parse", "--path-format=absolute", "--git-path", name], worktree))


IN_PROGRESS = {"MERGE_HEAD": "a merge", "rebase-merge": "a rebase", "rebase-apply": "a rebase or am",
               "CHERRY_PICK_HEAD": "a cherry-pick", "REVERT_HEAD": "a revert", "BISECT_LOG": "a bisect"}


def capture(agent: Agent, worktree: Path) -> State:
    """The worktree's state as trees, without touching the worktree or its index."""
    for name, what in IN_PROGRESS.items():
        if _git_path(worktree, name).exists():
            raise FleetError(f"agent '{agent.name}' is in the middle of {what} in {worktree}",
                             "finish it or abort it first; a snapshot cannot carry it")
    head_ref = git(["symbolic-ref", "-q", "HEAD"], worktree, check=False).stdout.decode().strip()
    if head_ref != f"refs/heads/{agent.branch}":
        raise FleetError(f"agent '{agent.name}' is not on its branch {agent.branch} in {worktree}",
                         f"switch back first: git -C {worktree} switch {agent.branch}")
    head = _out(["rev-parse", "--verify", "HEAD^{commit}"], worktree)
    if git(["ls-files", "--unmerged"], worktree).stdout:
        raise FleetError(f"agent '{agent.name}' has unresolved conflicts in {worktree}",
                         "resolve them (or git restore --staged) first")
    index = _out(["write-tree"], worktree)
    git_dir = _git_path(worktree, ".")
    with _scratch_index(git_dir, _git_path(worktree, "index")) as env:
        git(["add", "--update", "--", "."], worktree, env=env)  # tracked files as they are on disk
        work = _out(["write-tree"], worktree, env=env)
    raw = git(["ls-files", "--others", "--exclude-standard", "-z"], worktree).stdout
    untracked = [p for p in raw.split(b"\0") if p and not p.endswith(b"/")]  # x/ : a nested repository
    tree = None
    if untracked:
        with _scratch_index(git_dir) as env:
            git(["update-index", "--add", "-z", "--stdin"], worktree, env=env, input=b"\0".join(untracked) + b"\0")
            tree = _out(["write-tree"], worktree, env=env)
    return State(head, index, work, tree)


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
    return Snapshot(commit, State(parents[0], index, tree, untracked), meta)


def restore(state: State, worktree: Path) -> None:
    """Make a worktree that is a clean checkout of state.head hold exactly `state`."""
    # the index first, while the files still match the head: a two-way read-tree keeps the
    # stat data of the entries it does not change, so the refresh at the end reads only the
    # changed files
    git(["read-tree", "-m", state.head, state.index], worktree)
    diff = ["diff-tree", "-r", "-z", "--name-only", "--no-renames"]
    for rel in _z(git([*diff, "--diff-filter=D", state.head, state.work], worktree).stdout):
        path = worktree / rel
        path.unlink()
        parent = path.parent
        while parent != worktree and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    changed = git([*diff, "--diff-filter=AMT", state.head, state.work], worktree).stdout
    with _scratch_index(_git_path(worktree, ".")) as env:
        if changed:
            git(["read-tree", state.work], worktree, env=env)
            git(["checkout-index", "--force", "-z", "--stdin"], worktree, env=env, input=changed)
        if state.untracked:
            git(["read-tree", state.untracked], worktree, env=env)
            git(["checkout-index", "--force", "--all"], worktree, env=env)
    git(["update-index", "-q", "--refresh"], worktree, check=False)


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


def push(cwd: Path, remote: str, agent: str, snapshot: str, expect: str | None) -> None:
    """Park the snapshot on the remote, only if the remote still holds `expect` (None: nothing)."""
    ref = REFS + agent
    proc = git(["push", "--quiet", "--no-verify", f"--force-with-lease={ref}:{expect or ''}", remote,
                f"{snapshot}:{ref}"], cwd, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace")
        if "stale info" in err:
            raise FleetError(f"the remote's snapshot of '{agent}' changed while sending; nothing was replaced",
                             f"pull it first (git fleet-teleport pull {agent}), or push again with --force")
        raise FleetError(f"remote '{remote}' refused the snapshot of '{agent}': {_last_line(proc.stderr)}",
                         "nothing changed on either side; check the remote's hooks and your access to it")


def _last_line(raw: bytes) -> str:
    lines = [ln.strip() for ln in raw.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1].removeprefix("fatal: ").removeprefix("error: ") if lines else "git failed"


def local_ref(cwd: Path, agent: str) -> str | None:
    proc = git(["rev-parse", "-q", "--verify", f"{REFS}{agent}^{{commit}}"], cwd, check=False)
    return proc.stdout.decode().strip() or None


def remember(cwd: Path, agent: str, snapshot: str, ref: str = REFS) -> None:
    git(["update-ref", "-m", "fleet teleport", ref + agent, snapshot], cwd)


def is_ancestor(cwd: Path, a: str, b: str) -> bool:
    return git(["merge-base", "--is-ancestor", a, b], cwd, check=False).returncode == 0


def meta_for(fleet: Any, agent: Agent, remote: str) -> dict[str, Any]:
    tasks = []
    for t in fleet.claimed_tasks(agent):
        tasks.append({"id": t.id, "file": t.path.name, "spec": t.path.read_text(encoding="utf-8"),
                      "title": t.title, "expires": t.expires})
    settings = {k: getattr(agent, k) for k in Agent.SESSION_KEYS if getattr(agent, k) is not None}
    return {"format": FORMAT, "version": __version__, "agent": agent.name, "branch": agent.branch,
            "base": fleet.config.base, "zone": list(agent.zone), "settings": settings, "env": dict(agent.env),
            "host": socket.gethostname(), "time": int(time.time()), "remote": remote, "tasks": tasks}


# -- the three operations ---------------------------------------------------------------------------

def send(fleet: Any, name: str, given_remote: str | None, *, force: bool = False) -> Outcome:
    agent = fleet.config.agent(name)
    main = fleet.main
    where = fleet.worktree_of(agent)
    if not where.is_dir():
        raise fleet.missing_worktree(agent)
    remote = remote_of(main, given_remote, fleet.config.base)
    state = capture(agent, where)
    meta = meta_for(fleet, agent, remote)
    snapshot = write(state, meta, main)
    parked = remote_refs(main, remote, name).get(name)
    last = local_ref(main, name)
    if parked is not None and parked != last and not force:
        raise FleetError(f"remote '{remote}' holds a snapshot of '{name}' ({parked[:12]}) that this clone has not seen",
                         f"bring it here first (git fleet-teleport pull {name}), or replace it with --force")
    push(main, remote, name, snapshot, parked)
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


def receive(fleet: Any, name: str, given_remote: str | None, *, force: bool = False) -> Outcome:
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
    if agent is None:
        agent = _register(fleet, meta, state, out)
    else:
        if list(agent.zone) != meta.get("zone"):
            out.warnings.append(f"the snapshot's zone of '{name}' differs from this fleet's; this fleet's is kept")
        out.branch = agent.branch
        where = fleet.worktree_of(agent)
        if not where.is_dir():
            _recreate_worktree(fleet, agent, state, out)
        else:
            _bring_up_to_date(fleet, agent, snap, out, force)
    remember(main, name, oid)
    out.tasks = _claim_tasks(fleet, agent, meta.get("tasks", []), out)
    fleet.write_brief(agent)
    out.worktree = str(fleet.worktree_of(agent))
    return out


def _branch_check(fleet: Any, branch: str, head: str) -> None:
    """Refuse if the local branch has commits the snapshot's head lacks (moving it would lose them)."""
    tip = fleet.repo.branch_tip(branch)
    if tip is not None and not is_ancestor(fleet.main, tip, head):
        raise FleetError(f"both sides moved on: branch {branch} here has commits that the snapshot lacks",
                         f"keep them under another name (git branch -m {branch} {branch}-here), then pull again")


def _register(fleet: Any, meta: dict[str, Any], state: State, out: Outcome) -> Agent:
    """A new agent here, as the snapshot describes it: registered, with its branch and worktree."""
    name, branch = meta["agent"], meta["branch"]
    _branch_check(fleet, branch, state.head)
    settings = {k: v for k, v in meta.get("settings", {}).items() if k in Agent.SESSION_KEYS}
    had_branch = fleet.repo.branch_tip(branch) is not None
    agent, report = fleet.add(name, meta.get("zone") or [], branch=branch, base=state.head, session=settings,
                              env=tuple(sorted(meta.get("env", {}).items())))
    out.warnings += [w for w in report.warnings if "--base" not in w]
    where = fleet.worktree_of(agent)
    try:
        _fill(where, state)
    except BaseException:
        fleet.remove(name, force=True, keep_branch=had_branch)  # as it was before the pull
        if not had_branch and fleet.repo.branch_tip(branch) is not None:
            fleet.repo.delete_branch(branch, fleet.repo.branch_tip(branch))
        raise
    out.created = True
    return agent  # type: ignore[no-any-return]


def _recreate_worktree(fleet: Any, agent: Agent, state: State, out: Outcome) -> None:
    _branch_check(fleet, agent.branch, state.head)
    fleet.repo.worktree_prune()
    where = fleet.worktree_of(agent)
    if fleet.repo.branch_tip(agent.branch) is None:
        fleet.repo.create_branch(agent.branch, state.head)
    fleet.repo.worktree_add(where, agent.branch)
    _fill(where, state)
    out.created = True


def _fill(where: Path, state: State) -> None:
    """A fresh worktree on the agent's branch made to hold `state`; the branch, if it was already
    here, is behind the snapshot (checked by _branch_check) and fast-forwards."""
    if _out(["rev-parse", "HEAD"], where) != state.head:
        git(["merge", "--quiet", "--ff-only", state.head], where)
    restore(state, where)


def _bring_up_to_date(fleet: Any, agent: Agent, snap: Snapshot, out: Outcome, force: bool) -> None:
    """Replace the worktree's state by the snapshot's, if nothing made here since the last
    teleport would be lost (or, with force, after keeping it at refs/fleet/teleport-backup/)."""
    main, where, state = fleet.main, fleet.worktree_of(agent), snap.state
    here = capture(agent, where)
    if here == state:
        out.unchanged = True
        return
    last = local_ref(main, agent.name)
    known = last is not None and read(last, main).state == here
    clean = here.clean(_out(["rev-parse", f"{here.head}^{{tree}}"], main))
    moved = not is_ancestor(main, here.head, state.head)
    backup = f"{BACKUP}{agent.name}"
    if (moved or not (known or clean)) and not force:
        wt, short = shlex.quote(str(where)), snap.commit[:12]
        if moved:
            raise FleetError(f"both sides moved on: {agent.branch} in {where} has commits that the snapshot lacks",
                             f"keep both: git -C {wt} merge {short}^1 && git -C {wt} stash apply --index {short}\n"
                             f"or take the snapshot's state with --force (what is here is kept at {backup})")
        raise FleetError(f"agent '{agent.name}' has changes in {where} made since it was last teleported",
                         f"set them aside (git -C {wt} stash -u) and pull again, or pull with --force;\n"
                         f"either way what is here is kept: in the stash, or at {backup}")
    if moved or not (known or clean):
        remember(main, agent.name, write(here, meta_for(fleet, agent, "backup"), main), BACKUP)
        out.warnings.append(f"what was here is kept at {backup} (git stash apply --index {backup} brings it back)")
    git(["reset", "--quiet", "--hard", state.head], where)
    git(["clean", "--quiet", "-d", "--force"], where)
    restore(state, where)


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
