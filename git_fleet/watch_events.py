"""What git fleet-watch listens to, and what each change makes stale in the picture (picture.py):

- the branches (refs/heads/ and packed-refs): "refs";
- each agent's worktree, its files and its git dir's index and HEAD: "tree:AGENT";
- the agents' state logs (their CLIs' hooks) and the sessions' record: "sessions";
- the bus's directories: "bus";
- a fleet across machines: what its fetches bring (the bus, the holds, the branches), "remote";
  the watch fetches every FETCH_EVERY seconds, in a thread of its own, never holding up the screen;
- .gitfleet.toml: "config" (the fleet is read again).

inotify says so at once; what it cannot watch (no inotify, a tree over the budget) and what has
no events (tmux's panes) is looked at on timers instead (Sources.due)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import agent_state, machines, notify
from .config import CONFIG_NAME
from .errors import FleetError
from .gateway.repo import Repo
from .picture import BUS, READINESS, REFS, REMOTE, SESSIONS

if TYPE_CHECKING:
    from .fleet import Fleet

CONFIG = "config"
# what a worktree's watch skips: the fleet's own ignored directory (briefs rewritten at every task
# added), and what notify skips anyway (node_modules and the like: no status changes there)
SKIPPED = notify.SKIPPED | {b".fleet"}
APPEARED = "appeared"  # a directory watched for was made
PANES_EVERY = 2.0  # seconds between looks at tmux's panes (an agent whose program ended)
POLL_EVERY = 30.0  # seconds between looks at what inotify does not watch, and at everything
FETCH_EVERY = 5.0  # seconds between two fetches of the fleet's remote (a fleet across machines)


class Sources:
    def __init__(self, fleet: Fleet, budget: int = 50_000):
        self.events = notify.Events(budget)
        self.unwatched: set[str] = set()
        self._missing: list[tuple[Path, str, tuple[str, ...] | None, bool]] = []
        common = fleet.repo.common_dir
        self._watch(common / "refs" / "heads", REFS, recursive=True)
        self._watch(common, REFS, names=("packed-refs",))
        self._watch(common / "fleet", SESSIONS, names=("sessions.json",))
        self._watch(fleet.main, CONFIG, names=(CONFIG_NAME,))
        with contextlib.suppress(OSError):  # (where each agent's state directory appears, to be watched)
            os.makedirs(Path(agent_state.directory(str(common), "x")).parent, exist_ok=True)
        for agent in fleet.config.agents.values():
            self._watch(Path(agent_state.directory(str(common), agent.name)), SESSIONS)
            where = fleet.locate(agent)
            if where is not None:
                self._watch(where, f"tree:{agent.name}", recursive=True)
                admin = fleet.repo.admin_dir(where)
                if admin is not None:
                    self._watch(admin, f"tree:{agent.name}", names=("index", "HEAD"))
        remote = machines.remote_of(fleet.repo)
        self.fetcher = Fetcher(fleet.main, remote) if remote else None
        for d in fleet.bus().watched():
            self._watch(d, REMOTE if remote else BUS, recursive=True)
        self._last = {SESSIONS: time.monotonic(), notify.EVERYTHING: time.monotonic()}

    def _watch(self, path: Path, key: str, names: tuple[str, ...] | None = None, recursive: bool = False) -> None:
        """Watch `path`; one not there yet is watched for in its parent, and watched once it is made."""
        if self.events.add(path, key, names, recursive, SKIPPED):
            return
        if not path.exists() and path.parent != path and self.events.add(path.parent, APPEARED, (path.name,)):
            self._missing.append((path, key, names, recursive))
        else:
            self.unwatched.add(key)

    def fileno(self) -> int:
        return self.events.fd

    def changed(self) -> set[str]:
        """What the events queued now make stale."""
        keys = self.events.drain() if self.events.fd >= 0 else set()
        self.unwatched |= self.events.failed
        if APPEARED in keys:
            keys.discard(APPEARED)
            missing, self._missing = self._missing, []
            for path, key, names, recursive in missing:
                self._watch(path, key, names, recursive)
                keys.add(key)
        return keys

    def due(self) -> tuple[set[str], float]:
        """What the timers make stale now, and the seconds until the next timer."""
        now, stale = time.monotonic(), set()
        if now - self._last[SESSIONS] >= PANES_EVERY:
            stale.add(SESSIONS)
            self._last[SESSIONS] = now
        if now - self._last[notify.EVERYTHING] >= POLL_EVERY:
            stale |= {REFS, BUS, SESSIONS, READINESS, *self.unwatched}
            self._last[notify.EVERYTHING] = now
        wait = min(self._last[SESSIONS] + PANES_EVERY, self._last[notify.EVERYTHING] + POLL_EVERY) - now
        if self.fetcher is not None:
            if self.fetcher.due(now):
                stale.add(REMOTE)  # (what it brought is seen at once; this is for when it did not answer)
            wait = min(wait, self.fetcher.last + FETCH_EVERY - now)
        return stale, max(0.05, wait)

    def close(self) -> None:
        self.events.close()
        if self.fetcher is not None:
            self.fetcher.close()


class Fetcher:
    """The fleet's remote fetched every FETCH_EVERY seconds in a thread of its own (git's fetch
    runs as a process: the screen is never held up by a slow remote), one fetch at a time."""

    def __init__(self, main: Path, remote: str):
        self.main, self.remote = main, remote
        self.last = -FETCH_EVERY
        self._thread: threading.Thread | None = None

    def due(self, now: float) -> bool:
        """Start a fetch if one is due; whether one ended since the last call."""
        ended = self._thread is not None and not self._thread.is_alive()
        if ended:
            self._thread = None
        if self._thread is None and now - self.last >= FETCH_EVERY:
            self.last = now
            self._thread = threading.Thread(target=self._fetch, name="fleet-fetch", daemon=True)
            self._thread.start()
        return ended

    def _fetch(self) -> None:
        with contextlib.suppress(FleetError, OSError):  # (said where it is kept: machines.unanswered)
            repo = Repo.discover(self.main)  # (its own: a repository object is not shared between threads)
            machines.fetch(repo, self.remote)
            machines.heads(repo, self.remote)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=5)
