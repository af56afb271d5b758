"""An agent's commits published to the fleet's remote without anyone asking, in the background:
the post-commit hook (hook.py) starts this, detached, and returns at once, so a commit never
waits on the network.

One publisher per clone at a time (a lock); a commit made while one runs leaves a mark, and the
publisher goes round again for it. At most one round every `fleet.publishEvery` seconds (default
5), so a burst of commits is one push. Each round pushes the branch of every agent this machine
holds (holds.py) that the remote does not have as it is here, with the pre-push hooks (the zone
check, git-lfs), never forced; and renews the agents' holds, so the other machines know when
they were last heard from. What the remote said is kept (published.json) for git fleet-status
and the watch, the remote's words when it refused.

    python -m git_fleet.publish --hook         (the post-commit hook, in the committing worktree)
    python -m git_fleet.publish COMMON_DIR
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path

from . import agent_state, check, durable, holds, machines, publish_start
from .errors import FleetError
from .gateway import meeting, plumbing
from .gateway.repo import Repo

EVERY = 5.0  # seconds between two rounds (git config fleet.publishEvery)
RECORD = "published.json"
LONGEST = 600  # seconds a publisher lives at most


_WORKTREE_ENV = ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE", "GIT_PREFIX", "GIT_OBJECT_DIRECTORY",
                 "GIT_ALTERNATE_OBJECT_DIRECTORIES")  # (as hook.py's: the committing worktree's)


def from_hook() -> str | None:
    """Started by the post-commit hook, in the committing worktree: the clone's common dir if the
    commit is an agent's (the mark for a running publisher left), else None."""
    here = plumbing.here()
    main = plumbing.main_worktree_of(here.common_dir)
    if here.toplevel is None or main is None or os.path.realpath(here.toplevel) == os.path.realpath(main):
        return None
    compiled = check.load_compiled(here.common_dir, main)
    if compiled is None or compiled.agent_for(here.head_ref, here.toplevel) is None:
        return None
    publish_start.want(here.common_dir)
    return here.common_dir


def main(argv: list[str]) -> int:
    given = from_hook() if argv == ["--hook"] else argv[0] if argv else None
    if given is None:
        return 0
    common = Path(given)
    for name in _WORKTREE_ENV:  # (the committing worktree's, not ours; a sandboxed agent's store is its own)
        if not (agent_state.confined() and name in ("GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES")):
            os.environ.pop(name, None)
    main_worktree = plumbing.main_worktree_of(str(common))
    if main_worktree is None:
        return 0
    repo = Repo.discover(main_worktree)
    remote = machines.remote_of(repo)
    if remote is None:
        return 0
    place = machines.place(repo, remote)
    place.mkdir(parents=True, exist_ok=True)
    if not publish_start.spans(str(common)) and not agent_state.confined():  # (spanning since an earlier version)
        publish_start.record(str(common))
    wanted = Path(publish_start.wanted(str(common)))
    every = _every(repo)
    while True:
        done = _rounds(repo, remote, place, wanted, every)
        if done is None:
            return 0  # (another publisher runs: it goes round again for the mark this commit left)
        try:
            if os.stat(wanted).st_mtime_ns == done:
                return 0
        except OSError:
            return 0
        # a commit marked it as this one let go of the lock: its publisher may have found the lock
        # taken and gone; go round again (or leave it to the one that has the lock now)


def _rounds(repo: Repo, remote: str, place: Path, wanted: Path, every: float) -> int | None:
    """Rounds, under the clone's publisher lock, until no commit marked `wanted` during one: the
    mark last published; None if another publisher holds the lock."""
    fd = os.open(place / "publish.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        while True:
            try:
                mark = os.stat(wanted).st_mtime_ns
            except OSError:
                return 0
            time.sleep(max(0.0, os.fstat(fd).st_mtime + every - time.time()))
            os.utime(fd)
            signal.alarm(LONGEST)  # (a hung fetch or push ends with the process, and the lock with it)
            round_(repo, remote, place)
            try:
                if os.stat(wanted).st_mtime_ns == mark:
                    return mark
            except OSError:
                return 0
    finally:
        os.close(fd)


def _every(repo: Repo) -> float:
    raw = repo.config_get("fleet.publishEvery")
    try:
        return float(raw) if raw is not None else EVERY
    except ValueError:
        return EVERY


def round_(repo: Repo, remote: str, place: Path) -> None:
    """One round: every agent this machine holds whose branch the remote lacks as it is here."""
    from .config import load  # (a round's only: the hook that starts it never reads the TOML)

    said: dict[str, dict[str, object]] = _read(place / RECORD)
    main = repo.main_worktree
    cfg = load(main / ".gitfleet.toml") if main is not None else None
    if cfg is None:
        return
    me = machines.this(repo).id
    met = machines.meeting_repo(repo)
    try:
        machines.fetch(repo, remote)
        published = machines.heads(repo, remote)
    except FleetError as e:
        for name in cfg.agents:
            said[name] = {**said.get(name, {}), "at": int(time.time()), "ok": False, "said": e.message}
        durable.replace(place / RECORD, json.dumps(said, indent=1))
        return
    own = agent_state.confined()  # (a sandboxed agent's commit: its own branch alone, its hooks do not run here)
    for agent in [a for a in cfg.agents.values() if own is None or a.name == os.path.basename(own)]:
        tip = repo.branch_tip(agent.branch)
        hold = holds.read(met, remote, agent.name)
        if tip is None or hold is None:
            continue
        if hold.machine != me:
            # (commits made here that the remote lacks: this machine's, after the agent went elsewhere)
            if said.get(agent.name, {}).get("tip") != tip and not _in(repo, tip, published.get(agent.branch)):
                why = holds.refused(met, remote, agent.name, me) or ""
                said[agent.name] = {"at": int(time.time()), "ok": False, "said": why, "tip": tip}
            continue
        # every round renews the hold of every agent held here (when it was last heard from), with
        # its branch where the remote lacks it, in one atomic push: none lands for a hold taken
        beat = holds.beat(met, remote, agent.name, me, str(repo.common_dir))
        if _in(repo, tip, published.get(agent.branch)):
            if beat is not None and meeting.push(machines.at(repo), remote, [beat], key=machines.key(repo)).won:
                meeting.set_tracking(met, place / "fetched", {_tracked(remote, beat.ref): beat.new})
            continue
        ok, words = meeting.push_branch(machines.at(repo), remote, agent.branch, also=beat, key=machines.key(repo),
                                        tip=machines.confined_tip(tip))
        said[agent.name] = {"at": int(time.time()), "ok": ok, "said": words, "tip": tip}
        if not ok and beat is not None and meeting.push(machines.at(repo), remote, [beat], key=machines.key(repo)).won:
            ok = True  # (the branch refused: the beat alone, so the agent is still heard from, its state with it)
        if ok and beat is not None:
            meeting.set_tracking(met, place / "fetched", {_tracked(remote, beat.ref): beat.new})
    durable.replace(place / RECORD, json.dumps(said, indent=1))


def now(repo: Repo, agent: str, branch: str) -> str | None:
    """The agent's branch published at once (a worker reporting done: the orchestrator merges
    what is published), where the fleet spans machines and this machine holds the agent; why
    not, when it could not be, else None."""
    remote = machines.remote_of(repo)
    tip = repo.branch_tip(branch)
    if remote is None or tip is None:
        return None
    me = machines.this(repo).id
    met = machines.meeting_repo(repo)
    hold = holds.read(met, remote, agent)
    if hold is None or hold.machine != me:
        return None
    beat = holds.beat(met, remote, agent, me, str(repo.common_dir))
    ok, said = meeting.push_branch(machines.at(repo), remote, branch, also=beat, key=machines.key(repo),
                                   tip=machines.confined_tip(tip))
    if ok and beat is not None:
        meeting.set_tracking(met, machines.place(repo, remote) / "fetched", {_tracked(remote, beat.ref): beat.new})
    try:
        if ok or meeting.fetch_branch(machines.at(repo), remote, branch) == tip:  # (the background one, at once)
            return None
    except FleetError as e:
        return e.message
    return said


def _in(repo: Repo, tip: str, published: str | None) -> bool:
    """Whether the remote has `tip` (published is it, or after it)."""
    return published is not None and (published == tip or repo.is_ancestor(tip, published))


def _tracked(remote: str, ref: str) -> str:
    return meeting.tracking(remote) + ref.removeprefix(meeting.SHARED)


def _read(path: Path) -> dict[str, dict[str, object]]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def last(repo: Repo, remote: str) -> dict[str, dict[str, object]]:
    """What the last rounds said, per agent: this clone's, and what a sandboxed agent's own rounds
    said of that agent alone (in its own directory: machines.place)."""
    said = _read(repo.common_dir / "fleet" / "remote" / remote / RECORD)
    agents = repo.common_dir / "fleet" / "agents"
    for name in sorted(os.listdir(agents)) if agents.is_dir() else []:
        own = _read(agents / name / "remote" / remote / RECORD).get(name)  # (the agent's to write: checked)
        if isinstance(own, dict) and isinstance(own.get("at"), int) and isinstance(own.get("said", ""), str) \
                and (name not in said or _at(own) >= _at(said[name])):
            said[name] = {k: own.get(k) for k in ("at", "ok", "said", "tip")}
    return said


def _at(entry: dict[str, object]) -> int:
    at = entry.get("at")
    return at if isinstance(at, int) else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (FleetError, OSError):
        sys.exit(1)  # (nobody reads it: the next commit starts another)
