"""This clone as one machine of a fleet that spans machines: the remote they meet at, its id,
and its record on that remote.

A remote's name is each clone's own, so the fleet's remote is in this clone's config
(fleet.remote, set by `git fleet-init --remote`), never in the shared .gitfleet.toml; so is the
machine's id (fleet.machine: random, made once), which tells two clones on one laptop apart. Its
record on the remote, refs/fleet/machines/ID, says which host and user it is, for the others to
show.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import agent_state, records
from .config import parse_duration
from .errors import FleetError, UsageError
from .gateway import meeting, plumbing
from .gateway.meeting import Update

if TYPE_CHECKING:
    import pygit2

    from .fleet import Fleet
    from .gateway.repo import Repo

REMOTE, MACHINE, POLL = "fleet.remote", "fleet.machine", "fleet.poll"
KEY = os.path.join("fleet", "machine-key")  # this clone's SSH key (and .pub), in its common dir
MACHINES = "machines/"
# what a fetch brings, always together (one stamp says when it last answered): the bus, which
# machine holds each agent (holds.py), and the machines' records
PREFIXES = ["bus/", "agents/", MACHINES]


@dataclass(frozen=True)
class Machine:
    id: str
    host: str
    user: str

    def describe(self) -> str:
        return f"{self.id} ({self.user}@{self.host})"


def remote_of(repo: Repo) -> str | None:
    """The remote this clone's fleet meets at; None: the fleet is this clone's alone."""
    return repo.config_get(REMOTE) or None


def poll_of(repo: Repo) -> float:
    raw = repo.config_get(POLL)
    if raw is None:
        return 2.0
    try:
        return float(parse_duration(raw)) if not raw.replace(".", "", 1).isdigit() else float(raw)
    except (FleetError, ValueError):
        raise UsageError(f"git config {POLL} = {raw!r} is not a duration", "give seconds, e.g. 2 or 5s") from None


def place(repo: Repo, remote: str) -> Path:
    """Where this clone keeps what it knows of `remote`'s shared state: when it was last fetched
    (the fetch's lock), and when each claim was first seen here. In a sandboxed agent's process,
    its own directory's (see at)."""
    own = agent_state.confined()
    return Path(own) / "remote" / remote if own else repo.common_dir / "fleet" / "remote" / remote


def at(repo: Repo) -> Path:
    """Where git talks to the remote from: the main worktree, so that a remote's relative path
    means what it means to the person who gave it. In a sandboxed agent's process, which may write
    neither the clone's refs nor its object store, a repository of the agent's own in its own
    directory (meeting.git: the remote's URL, refs/fleet-remote/ as fetched by the agent's
    commands, its objects in the agent's own store), so that its claims and results need nothing
    of the clone's but reading."""
    own = agent_state.confined()
    if own is None:
        return repo.main_worktree or repo.common_dir
    where = Path(own) / "meeting.git"
    if where in _MET:
        return where
    if not (where / "config").is_file():
        where.mkdir(parents=True, exist_ok=True)
        for d in ("refs", "info"):
            (where / d).mkdir(exist_ok=True)
        (where / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
        with contextlib.suppress(FileExistsError):
            (where / "objects").symlink_to(Path("..") / "objects")  # (the agent's own store)
        (where / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = true\n", encoding="utf-8")
    remote = remote_of(repo)
    if remote is not None:
        for key, flag in ((f"remote.{remote}.url", []), (f"remote.{remote}.pushurl", ["--push"])):
            url = plumbing.out(["remote", "get-url", *flag, remote], repo.main_worktree or repo.common_dir, check=False)
            if url and not re.match(r"^[\w+.-]+://|^[^/]+:", url):  # (a path: from where the person gave it)
                url = os.path.normpath(os.path.join(repo.main_worktree or repo.common_dir, url))
            if url and plumbing.out(["config", "--get", key], where, check=False) != url:
                plumbing.git(["config", key, url], where)
    _MET[where] = None
    return where


_MET: dict[Path, pygit2.Repository | None] = {}  # a sandboxed agent's meeting repositories, set up (and opened)


def confined_tip(tip: str) -> str | None:
    """What a push of an agent's branch names as its source: the branch itself (None), or, from a
    sandboxed agent's meeting repository (at), which has no branches, its tip."""
    return tip if agent_state.confined() else None


def meeting_repo(repo: Repo) -> pygit2.Repository:
    """The repository whose refs/fleet-remote/ hold what this process knows of the fleet's remote,
    and where its records are made: the clone's, or a sandboxed agent's own (at)."""
    if agent_state.confined() is None:
        return repo.pygit
    import pygit2

    where = at(repo)
    found = _MET.get(where)
    if found is None:
        found = _MET[where] = pygit2.Repository(str(where))
        found.odb.add_disk_alternate(str(repo.common_dir / "objects"))
    return found


def heads(repo: Repo, remote: str) -> dict[str, str]:
    """The remote's branches, fetched now: branch -> commit (meeting.fetch_heads)."""
    return meeting.fetch_heads(at(repo), remote, place(repo, remote) / "heads.lock")


def known_heads(repo: Repo, remote: str) -> dict[str, str]:
    """The remote's branches as the last fetch of them brought them."""
    return meeting.refs_under(meeting_repo(repo), f"{meeting.tracking(remote)}heads/")


def fetch(repo: Repo, remote: str) -> None:
    """The fleet's shared state fetched now (meeting.fetch: when the remote does not answer, git's
    words are kept for those that show the last fetched state without fetching, the watch)."""
    meeting.fetch(at(repo), remote, PREFIXES, place(repo, remote) / "fetched")
    _forget_seen(repo, remote)


def unanswered(repo: Repo, remote: str) -> str | None:
    """Why the last fetch got no answer from the remote; None if it did."""
    return meeting.unanswered(place(repo, remote) / "fetched")


SEEN_KEPT = 3600  # seconds a first-seen mark of a record no ref points at any more is kept


def _forget_seen(repo: Repo, remote: str) -> None:
    """The first-seen marks (remote_bus/view.first_seen) of records that are no ref's tip any
    more, and older than an hour, removed, at most once an hour: a mark a step or a beat left
    here each time, they would grow without end. (One of a tip is never removed: it dates its
    lease; one just made is an hour from being removed.)"""
    seen = place(repo, remote) / "seen"
    stamp = place(repo, remote) / "seen.forgotten"
    now = time.time()
    try:
        if now - os.stat(stamp).st_mtime < SEEN_KEPT:
            return
    except OSError:
        pass
    try:
        stamp.touch()
        tips = set(meeting.refs_under(meeting_repo(repo), meeting.tracking(remote)).values())
        with os.scandir(seen) as found:
            old = [e.path for e in found if e.name not in tips and e.stat().st_mtime < now - SEEN_KEPT]
        for path in old:
            os.unlink(path)
    except OSError:
        pass  # (the next fetch an hour on)


def parse_record(message: str) -> dict[str, object]:
    """A machine's record (its host and user), from its commit's message."""
    try:
        found = json.loads(message.rstrip("\n").rpartition("\n")[2])
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise FleetError("not a machine's record")
    return found


def this(repo: Repo) -> Machine:
    """This clone as a machine: its id made if it has none yet. FleetError for a clone copied
    from another (cp -r): the same id, and key, as the one still there would be two machines as
    one, each believing it holds the agents."""
    ident = repo.config_get(MACHINE)
    if not ident:
        ident = secrets.token_hex(5)
        repo.config_set(MACHINE, ident)
    _not_a_copy(repo, ident)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return Machine(ident, socket.gethostname(), user)


def key(repo: Repo) -> Path | None:
    """This machine's SSH key, which signs its pushes to the fleet's remote where the remote asks
    (a server that checks which machine pushes: server_shared.py); None where it has none."""
    path = repo.common_dir / KEY
    return path if path.is_file() else None


def _make_key(repo: Repo, ident: str) -> bytes | None:
    """This machine's public key, the key made first if there is none; None without ssh-keygen
    (OpenSSH): its pushes are then unsigned, which a server that asks for signatures refuses."""
    path = repo.common_dir / KEY
    if not path.is_file():
        if shutil.which("ssh-keygen") is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        _keygen(path, ident)
    try:
        return Path(f"{path}.pub").read_bytes()
    except OSError as e:
        raise FleetError(f"cannot read this machine's public key {path}.pub: {e.strerror}",
                         f"remove {path} to have another made") from None


def _keygen(path: Path, ident: str) -> None:
    """An SSH key for machine `ident` made at `path` (and .pub), unencrypted: ssh-keygen's."""
    made = subprocess.run([shutil.which("ssh-keygen") or "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                           f"git-fleet machine {ident}", "-f", str(path)],
                          capture_output=True, stdin=subprocess.DEVNULL, check=False)
    if made.returncode != 0:
        raise FleetError(f"ssh-keygen could not make a key at {path}: {made.stderr.decode('utf-8', 'replace').strip()}")


def new_key(fleet: Fleet, remote: str) -> Machine:
    """This machine's key replaced (`git fleet-init --remote NAME --new-key`): a new one made,
    registered by a new record on top of the machine's on the remote, pushed signed with the old
    key (a server that checks signed machines takes it from the machine alone), and only then put
    in the old one's place. Nothing changes if the remote does not take it."""
    me, old = this(fleet.repo), key(fleet.repo)
    if old is None:
        raise FleetError("this machine has no key yet", f"git fleet-init --remote {remote} makes one")
    fetch(fleet.repo, remote)
    have = meeting.refs_under(fleet.repo.pygit, meeting.tracking(remote) + MACHINES).get(me.id)
    if have is None:
        raise FleetError(f"machine {me.id} has no record on '{remote}' to register a new key in",
                         f"git fleet-init --remote {remote} registers it with its key")
    made = old.with_name(old.name + ".new")
    for leftover in (made, Path(f"{made}.pub")):
        leftover.unlink(missing_ok=True)
    _keygen(made, me.id)
    record = meeting.commit(fleet.repo.pygit, have).message
    commit = meeting.make_commit(fleet.repo.pygit, record, {records.PUBLIC: Path(f"{made}.pub").read_bytes()}, have)
    pushed = meeting.push(at(fleet.repo), remote, [Update(meeting.SHARED + MACHINES + me.id, commit, have)], key=old)
    if not pushed.won:
        for leftover in (made, Path(f"{made}.pub")):
            leftover.unlink(missing_ok=True)
        raise FleetError(f"remote '{remote}' did not take the new key of machine {me.id}: "
                         f"{pushed.refused or 'its record changed meanwhile'}", "the old key stays; nothing changed")
    os.replace(f"{made}.pub", f"{old}.pub")
    os.replace(made, old)
    return me


AT = os.path.join("fleet", "machine-at")  # in the common dir: where the clone was when it took its id, and the id


def _not_a_copy(repo: Repo, ident: str) -> None:
    """Refused where this clone's id is that of the clone it was copied from: its record (AT: the
    place, the host and the common dir's inode when it took the id) names another clone still
    there with the id, or a common dir of another inode (a copy whose original moved on, one on
    another host at the same path, and a clone moved to another file system or restored, which
    the hint tells how to own). A clone moved within its file system (same inode), or reached by
    another path to it (a bind mount), is itself."""
    record, here = repo.common_dir / AT, os.path.realpath(repo.common_dir)
    try:
        st = os.stat(here)
        mine = f"{socket.gethostname()} {st.st_dev}:{st.st_ino}"
        lines = record.read_text(encoding="utf-8").split("\n")
        was, had, then = lines[0], lines[1], lines[2] if len(lines) > 2 else ""
    except (OSError, ValueError, IndexError):
        was, had, then = "", "", ""
    if (was, had, then) == (here, ident, mine):
        return
    host = then.split(" ")[0] if then else socket.gethostname()
    inode_moved = bool(then) and then != mine
    other = had == ident and was != here and os.path.isfile(os.path.join(was, "config")) and not _same(was, here) \
        and plumbing.out(["config", "--file", os.path.join(was, "config"), "--get", MACHINE], here, check=False) == ident
    if had == ident and (other or inode_moved):
        where = f"the one at {os.path.dirname(was)}" + (f" on {host}" if host != socket.gethostname() else "")
        raise FleetError(f"this clone is a copy of {where}, with its machine id {ident}: two machines as one",
                         f"give this one its own: git config --unset fleet.machine && rm -f {repo.common_dir / KEY} "
                         f"{repo.common_dir / KEY}.pub && git fleet-init --remote NAME (then git fleet-join AGENT "
                         f"--take-over for the agents it is to run); if it is that clone, moved or restored, not "
                         f"copied: rm {record}")
    with contextlib.suppress(OSError):  # (a sandboxed agent's process may not write it: the next one does)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(f"{here}\n{ident}\n{mine}\n", encoding="utf-8")


def bus_fetched(repo: Repo, remote: str) -> bool:
    """Whether this clone has fetched a shared bus from `remote` (its tasks/ then holds copies)."""
    return bool(meeting.refs_under(repo.pygit, meeting.tracking(remote) + "bus/"))


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def span(fleet: Fleet, remote: str) -> Machine:
    """Make the fleet span machines through `remote`: this clone's record pushed there (which
    also shows the remote takes refs under refs/fleet/), then the remote kept in this clone's
    config. Nothing is set if the remote cannot be reached or refuses."""
    names = plumbing.out(["remote"], fleet.repo.common_dir).split()
    if remote not in names:
        raise UsageError(f"unknown remote '{remote}'", "known remotes: " + (", ".join(names) or "none")
                         + "; add it first with git remote add NAME URL")
    me = this(fleet.repo)
    record = json.dumps({"fleet": 1, "op": "machine", "host": me.host, "user": me.user,
                         "since": int(time.time())}, sort_keys=True)
    public = _make_key(fleet.repo, me.id)
    commit = meeting.make_commit(fleet.repo.pygit, f"fleet: machine {me.describe()}\n\n{record}\n",
                                 {records.PUBLIC: public} if public else {}, None)
    cwd = at(fleet.repo)
    fetch(fleet.repo, remote)
    ref = meeting.SHARED + MACHINES + me.id
    have = meeting.refs_under(fleet.repo.pygit, meeting.tracking(remote) + MACHINES).get(me.id)
    if have is None:
        # with a second ref, removed again: the remote must take atomic pushes (every add is one)
        probe = f"{ref}.atomic"
        try:
            pushed = meeting.push(cwd, remote, [Update(ref, commit, None), Update(probe, commit, None)],
                                  key=key(fleet.repo))
        except meeting.Unreachable as e:
            if "atomic" not in e.message:
                raise
            raise FleetError(f"remote '{remote}' does not take atomic pushes (git push --atomic), which a fleet across "
                             "machines needs", "use a remote that does (see the README: one fleet across machines); "
                             "nothing was set") from None
        if not pushed.won:
            enrol = "not enrolled" in (pushed.refused or "")
            raise FleetError(f"remote '{remote}' did not take this machine's record ({ref}): "
                             f"{pushed.refused or 'another clone has the same machine id'}",
                             f"enrol this machine's key ({fleet.repo.common_dir / KEY}.pub) on the server as its "
                             "words say, then run this again" if enrol else
                             "the remote must accept refs under refs/fleet/ (see the README: one fleet across machines)")
        meeting.push(cwd, remote, [Update(probe, None, commit)], key=key(fleet.repo))
    fleet.repo.config_set(REMOTE, remote)
    return me
