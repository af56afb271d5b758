"""The snapshot as one commit: what a worktree's state must be to be captured (and what is
refused), the stash-shaped commit written and read back, what it counts, the metadata it carries
(the agent's settings and claimed tasks, as JSON in its message), and what a push or pull reports."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, brief
from ..config import Agent
from ..errors import FleetError
from ..gateway import plumbing
from ..gateway.environments import LOCATING
from ..gateway.plumbing import git
from ..snapshot import State, capture_trees, git_path

if TYPE_CHECKING:
    from ..fleet import Fleet

FORMAT = 2  # 2: changed and untracked files are kept as the bytes on disk (snapshot.py)
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




def _z(raw: bytes) -> list[str]:
    return [p.decode("utf-8", "surrogateescape") for p in raw.split(b"\0") if p]


IN_PROGRESS = {"MERGE_HEAD": "a merge", "rebase-merge": "a rebase", "rebase-apply": "a rebase or am",
               "CHERRY_PICK_HEAD": "a cherry-pick", "REVERT_HEAD": "a revert", "BISECT_LOG": "a bisect"}


def capture(agent: Agent, worktree: Path, base: str, scratch: Path, confined: bool = False) -> State:
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
    _refuse_other_repositories(agent, worktree, base, confined)
    return capture_trees(worktree, scratch)


def _refuse_other_repositories(agent: Agent, worktree: Path, base: str, confined: bool) -> None:
    """Work inside a submodule, or in a repository of its own that sits untracked in the worktree,
    lives in another repository's objects: a snapshot of this one cannot carry it. A sandboxed
    agent's submodules are not looked into (git would run there under their configuration, the
    agent's to write): one checked out is refused."""
    raw = git(["status", "--porcelain=v2", "-z", f"--ignore-submodules={'dirty' if confined else 'none'}",
               "--untracked-files=all"], worktree, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout
    problems = []
    if confined:
        for item in _z(git(["ls-files", "-s", "-z"], worktree).stdout):
            path = item.split("\t", 1)[1] if "\t" in item else ""
            if item.startswith("160000 ") and os.path.lexists(worktree / path / ".git"):
                problems.append(f"  submodule {path}: checked out in a sandboxed agent's worktree, which the fleet "
                                "does not look into")
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
        # (in the submodule's own repository: never the git dir the fleet pinned for the worktree)
        own = {k: v for k, v in os.environ.items() if k not in LOCATING}
        known = git(["for-each-ref", "--contains", oid, "--count=1", "refs/remotes/"], sub, check=False, env=own)
        if known.returncode != 0 or not known.stdout.strip():
            problems.append(f"  submodule {path}: commit {oid[:12]} is on no remote of the submodule")
    return problems


def counts(state: State, cwd: Path) -> dict[str, int]:
    def changed(a: str, b: str) -> int:
        return len(_z(git(["diff-tree", "-r", "-z", "--name-only", "--no-renames", a, b], cwd).stdout))

    head_tree = plumbing.out(["rev-parse", f"{state.head}^{{tree}}"], cwd)
    untracked = len(_z(git(["ls-tree", "-r", "-z", "--name-only", state.untracked], cwd).stdout)) if state.untracked else 0
    return {"staged": changed(head_tree, state.index), "unstaged": changed(state.index, state.work), "untracked": untracked}


def write(state: State, meta: dict[str, Any], cwd: Path) -> str:
    """The snapshot commit (stash-shaped); no ref is touched."""
    branch = meta["branch"]
    index_commit = plumbing.out(["commit-tree", state.index, "-p", state.head, "-m", f"index on {branch}"], cwd)
    parents = ["-p", state.head, "-p", index_commit]
    if state.untracked:
        parents += ["-p", plumbing.out(["commit-tree", state.untracked, "-m", f"untracked files on {branch}"], cwd)]
    meta = {**meta, "filtered": list(state.filtered or ())}
    message = f"{SUBJECT}{meta['agent']} from {meta['host']}\n\n{json.dumps(meta, indent=1, sort_keys=True)}\n"
    return plumbing.out(["commit-tree", state.work, *parents, "-F", "-"], cwd, input=message.encode())


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
    index = plumbing.out(["rev-parse", f"{parents[1]}^{{tree}}"], cwd)
    untracked = plumbing.out(["rev-parse", f"{parents[2]}^{{tree}}"], cwd) if len(parents) > 2 else None
    # format 1 stored every file through git's clean conversion: it goes back through git's checkout
    filtered = tuple(meta.get("filtered", ())) if version >= 2 else None
    return Snapshot(commit, State(parents[0], index, tree, untracked, filtered), meta)


def meta_for(fleet: Fleet, agent: Agent, remote: str) -> dict[str, Any]:
    tasks = []
    for t in brief.claimed_tasks(fleet, agent):
        tasks.append({"id": t.id, "file": t.path.name, "spec": t.path.read_text(encoding="utf-8", errors="replace"),
                      "title": t.title, "expires": t.expires})
    settings = {k: getattr(agent, k) for k in Agent.SESSION_KEYS if getattr(agent, k) is not None}
    return {"format": FORMAT, "version": __version__, "agent": agent.name, "branch": agent.branch,
            "base": fleet.config.base, "zone": list(agent.zone), "settings": settings, "env": dict(agent.env),
            "host": socket.gethostname(), "time": int(time.time()), "remote": remote, "tasks": tasks}

