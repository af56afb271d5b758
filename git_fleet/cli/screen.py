"""git fleet-watch's live screen, in curses.

Why curses: it is Python's own (nothing to install on a server reached over SSH), it speaks
every terminal through terminfo (80x24, no colour, NO_COLOR), it redraws only what changed, and it
leaves the event loop to us: one select() waits on the keyboard, the fleet's inotify events and a
running command's output at once, so an idle screen costs nothing between timers. Textual would
bring a framework's loop and about half a second of start-up for a screen of text lines.

Commands the person starts from the screen (a checkpoint merge, a sync) run as their own
processes, `python -m git_fleet.cli.commands ...`, exactly as typed at a prompt: the screen stays
live while they run and shows their last line when they end."""

from __future__ import annotations

import contextlib
import curses
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FleetError
from ..fleet import Fleet
from ..notify import EVERYTHING
from ..picture import Picture, needing
from ..sessions import Sessions
from ..watch_events import CONFIG, Sources
from .watch import render

if TYPE_CHECKING:
    from _curses import window

PACKAGE = Path(__file__).resolve().parent.parent.parent  # the directory git_fleet is imported from
DEBOUNCE = 0.15  # seconds to gather a burst of events (an agent writing many files) into one refresh
AGES_EVERY = 5.0  # seconds between redraws for the ages alone
KEYS = ["up/down, k/j  move between agents", "Enter         go to the agent's tmux pane",
        "m             merge the checkpoint that is ready", "s             sync: the base into the agents' branches",
        "r             look at everything again", "?             these keys", "q             quit"]
HINT = "↑↓ agent  Enter go  m merge  s sync  r refresh  ? keys  q quit"


def styles() -> dict[str, int]:
    """Each style of watch.render's lines as curses attributes: colour where the terminal has it
    and NO_COLOR is not set (non-empty), bold and reverse video always."""
    found = {"head": curses.A_BOLD, "title": curses.A_BOLD, "needs": curses.A_BOLD, "selected": curses.A_REVERSE,
             "warn": 0, "zone": 0, "ready": curses.A_BOLD, "": 0}
    if curses.has_colors() and not os.environ.get("NO_COLOR"):
        curses.start_color()
        try:
            curses.use_default_colors()
            background = -1
        except curses.error:  # (a terminal without default colours)
            background = curses.COLOR_BLACK
        for n, (style, colour) in enumerate((("needs", curses.COLOR_RED), ("warn", curses.COLOR_YELLOW),
                                             ("zone", curses.COLOR_MAGENTA), ("ready", curses.COLOR_GREEN)), 1):
            curses.init_pair(n, colour, background)
            found[style] |= curses.color_pair(n)
    return found


def put(scr: window, y: int, text: str, width: int, attr: int) -> None:
    with contextlib.suppress(curses.error):  # (the terminal shrank under us: the next draw fits)
        scr.addnstr(y, 0, text, max(0, width - 1), attr)


class CannotDraw(Exception):
    """curses cannot drive this terminal."""


class Screen:
    def __init__(self, fleet: Fleet, picture: Picture, notify: str, told: list[str] | None = None):
        self.fleet, self.picture, self.notify = fleet, picture, notify
        self.data: dict[str, Any] = {}
        self.selected: str | None = None
        # (what opening the fleet recovered, or found in progress: a merge a killed process left)
        self.message, self.message_style = "; ".join(told or []), "warn" if told else ""
        self.asking: tuple[str, list[str]] | None = None  # (what, the checkpoints offered) while a question is open
        self.help = False
        self.action: Running | None = None
        self.quit_asked = False
        self.styles: dict[str, int] = {}

    def run(self) -> int:
        """The live screen until q; where curses cannot drive the terminal (a TERM it has no entry
        for), the picture once, as --once prints it, with a warning."""
        try:
            return int(curses.wrapper(self._main))
        except curses.error as e:
            raise CannotDraw(str(e)) from None

    # -- the loop ----------------------------------------------------------------------------------

    def _main(self, scr: window) -> int:
        self._setup(scr)
        sources = Sources(self.fleet)
        Sessions(self.fleet).watching(True)
        try:
            self._refresh(None)
            drawn = 0.0
            while True:
                self._draw(scr)
                drawn = time.monotonic()
                stale, wait = sources.due()
                if stale:
                    self._refresh(stale)
                    continue
                fds = [sys.stdin.fileno()] + ([sources.fileno()] if sources.fileno() >= 0 else [])
                pidfd = self.action.fileno() if self.action is not None else None
                if pidfd is not None:
                    fds.append(pidfd)
                elif self.action is not None:
                    wait = min(wait, Running.POLL)
                ready, _, _ = select.select(fds, [], [], min(wait, max(0.0, drawn + AGES_EVERY - time.monotonic())))
                if sys.stdin.fileno() in ready and self._keys(scr) == "quit":
                    return 0
                if self.action is not None:
                    self._action_output()
                if sources.fileno() in ready:
                    time.sleep(DEBOUNCE)
                    changed = sources.changed()
                    if CONFIG in changed or EVERYTHING in changed:
                        sources = self._reload(sources)
                        changed = set()  # (everything is read again: a new picture)
                        self._refresh(None)
                    elif changed:
                        self._refresh(changed)
        finally:
            sources.close()
            Sessions(self.fleet).watching(False)

    def _setup(self, scr: window) -> None:
        with contextlib.suppress(curses.error):  # (a terminal that cannot hide its cursor: vt100, dumb)
            curses.curs_set(0)
        scr.keypad(True)
        scr.nodelay(True)
        self.styles = styles()

    def _reload(self, sources: Sources) -> Sources:
        """The fleet read again after .gitfleet.toml changed (agents added or removed)."""
        try:
            fleet = Fleet.here(self.fleet.main)
        except FleetError as e:
            self._say(f"error: {e.message}", "needs")
            return sources
        sources.close()
        self.fleet, self.picture = fleet, Picture(fleet)
        if self.message.startswith("error: "):
            self.message = ""  # (the configuration that said so is mended)
        return Sources(fleet)

    def _refresh(self, stale: set[str] | None) -> None:
        before = set(needing(self.data)) if self.data else set()
        try:
            self.data = self.picture.refresh(stale)
        except FleetError as e:
            self._say(f"error: {e.message}", "needs")
            return
        names = [r["agent"] for r in self.data["agents"]]
        if self.selected not in names:
            self.selected = names[0] if names else None
        new = [n for n in needing(self.data) if n not in before]
        if new and self.data:
            self._tell(new)

    def _tell(self, agents: list[str]) -> None:
        rows = {r["agent"]: r for r in self.data["agents"]}
        text = "; ".join(f"{a} needs you" + (f": {rows[a]['message']}" if rows[a]["message"] else "") for a in agents)
        self._say(text, "needs")
        if self.notify == "bell":
            curses.beep()
        elif self.notify == "tmux" and os.environ.get("TMUX"):
            Sessions(self.fleet).say(f"fleet: {text}")

    def _say(self, text: str, style: str = "") -> None:
        self.message, self.message_style = " ".join(text.split()), style

    # -- drawing -----------------------------------------------------------------------------------

    def _draw(self, scr: window) -> None:
        height, width = scr.getmaxyx()
        scr.erase()
        if self.help:
            lines = [("KEYS", "title"), *[("  " + k, "") for k in KEYS], ("", ""), ("any key: back", "")]
        else:
            lines = render(self.data, width - 1, time.time(), self.selected) if self.data else [("reading…", "")]
        text, style = self._bottom()
        # the message line: as many screen lines as it needs, up to three
        bottom = [text[i: i + width - 1] for i in range(0, max(1, len(text)), max(1, width - 1))][:3]
        room = height - len(bottom)
        if len(lines) > room:
            lines = lines[: room - 1] + [(f"… {len(lines) - room + 1} more lines: a taller terminal shows them", "")]
        for y, (line, line_style) in enumerate(lines):
            put(scr, y, line, width, self.styles.get(line_style, 0))
        for y, line in enumerate(bottom, room):
            put(scr, y, line, width, self.styles.get(style, 0))
        scr.refresh()

    def _bottom(self) -> tuple[str, str]:
        if self.asking is not None:
            what, offered = self.asking
            if len(offered) > 1:
                return (f"{what} which? " + "  ".join(f"{i}) {n}" for i, n in enumerate(offered, 1))
                        + "  (a number, Esc: no)", "needs")
            return f"{what} {offered[0]}? y/N" if offered else f"{what}? y/N", "needs"
        if self.action is not None and not self.quit_asked:
            return f"{self.action.label} … (the screen goes on; q leaves it running)", "ready"
        return (self.message, self.message_style) if self.message else (HINT, "")

    # -- keys --------------------------------------------------------------------------------------

    def _keys(self, scr: window) -> str | None:
        while True:
            key = scr.getch()
            if key == -1:
                return None
            if self._key(key) == "quit":
                return "quit"

    def _key(self, key: int) -> str | None:
        if key == curses.KEY_RESIZE:
            return None
        if self.help:
            self.help = False
            return None
        if self.asking is not None:
            self._answer(key)
            return None
        ch = chr(key) if 0 <= key < 256 else ""
        if ch == "q":
            if self.action is not None and not self.quit_asked:
                self.quit_asked = True
                self._say(f"{self.action.label} still runs; it finishes on its own. q again to quit", "needs")
                return None
            return "quit"
        self.quit_asked = False
        names = [r["agent"] for r in self.data.get("agents", [])]
        if key in (curses.KEY_UP, curses.KEY_DOWN) or ch in ("k", "j"):
            if names:
                at = names.index(self.selected) if self.selected in names else 0
                at += -1 if key == curses.KEY_UP or ch == "k" else 1
                self.selected = names[max(0, min(len(names) - 1, at))]
            self.message = ""
        elif key in (curses.KEY_ENTER, 10, 13):
            self._go()
        elif ch == "m":
            self._ask_merge()
        elif ch == "s":
            self._start_asking("sync every agent behind the base", [])
        elif ch == "r":
            self._refresh(None)
            self._say("looked at everything again")
        elif ch == "?":
            self.help = True
        return None

    def _go(self) -> None:
        row = next((r for r in self.data.get("agents", []) if r["agent"] == self.selected), None)
        if row is None:
            return
        if not row["pane"] or not row["running"]:
            self._say(f"{row['agent']} is not running in tmux: start it with git fleet-up {row['agent']}", "warn")
        elif not os.environ.get("TMUX"):
            self._say(f"outside tmux: attach to it with git fleet-attach {row['agent']}", "warn")
        else:
            try:
                Sessions(self.fleet).show(row["pane"])
            except FleetError as e:
                self._say(f"error: {e.message}", "needs")

    def _ask_merge(self) -> None:
        cps = self.data.get("checkpoints", [])
        ready = [cp["checkpoint"] for cp in cps if cp["state"] == "ready"]
        if ready:
            self._start_asking("merge checkpoint", ready)
        elif cps:
            self._say("no checkpoint is ready: " + "; ".join(f"{cp['checkpoint']}: {cp['state']}"
                                                             + (f" ({cp['why']})" if cp["why"] else "") for cp in cps), "warn")
        else:
            self._say("no checkpoint is declared: git fleet-checkpoint add NAME --agent A --agent B", "warn")

    def _start_asking(self, what: str, offered: list[str]) -> None:
        if self.action is not None:
            self._say(f"{self.action.label} still runs: one at a time", "warn")
            return
        self.asking = (what, offered)

    def _answer(self, key: int) -> None:
        assert self.asking is not None
        what, offered = self.asking
        ch = chr(key) if 0 <= key < 256 else ""
        chosen: str | None = None
        if len(offered) > 1 and ch.isdigit() and 1 <= int(ch) <= len(offered):
            chosen = offered[int(ch) - 1]
        elif len(offered) <= 1 and ch in ("y", "Y"):
            chosen = offered[0] if offered else ""
        self.asking = None
        if chosen is None:
            self._say(f"{what}: not done", "")
        elif what.startswith("merge"):
            self._start(f"merging checkpoint {chosen}", ["merge", "--checkpoint", chosen, "-v"])
        else:
            self._start("syncing", ["sync", "-v"])

    def _start(self, label: str, args: list[str]) -> None:
        self.action, self.message = Running(label, args, str(self.fleet.main)), ""

    def _action_output(self) -> None:
        assert self.action is not None
        ended = self.action.read()
        if ended is None:
            return
        code, shown = ended
        label, self.action, self.quit_asked = self.action.label, None, False
        self._say(f"{label}: {'done' if code == 0 else 'refused'}" + (": " + shown if shown else ""),
                  "ready" if code == 0 else "needs")
        self._refresh(None)


class Running:
    """A fleet command started from the screen, in a process of its own (its own session: a q or a
    closed terminal does not stop it), writing to a file of its own, never a pipe that could close
    under it; its end is seen through a pidfd (or, where there is none, every POLL seconds)."""

    POLL = 0.2

    def __init__(self, label: str, args: list[str], cwd: str):
        self.label = label
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 - (closed in read(), when the command ended)
        # -I: neither the main worktree (the cwd) nor PYTHON* variables choose the code that runs;
        # the package is this one, wherever it is installed
        code = f"import sys; sys.path.insert(0, {str(PACKAGE)!r}); from git_fleet.cli.commands import fleet; " \
               "fleet(prog_name='git fleet')"
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", code, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"},
                                     start_new_session=True)
        try:
            self.pidfd: int | None = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            self.pidfd = None

    def fileno(self) -> int | None:
        return self.pidfd

    def read(self) -> tuple[int, str] | None:
        """(exit status, what it said: its errors, else its last lines) once it ended; None before."""
        code = self.proc.poll()
        if code is None:
            return None
        if self.pidfd is not None:
            os.close(self.pidfd)
        self.out.seek(0)
        lines = [line for line in self.out.read().decode("utf-8", "replace").splitlines() if line.strip()]
        self.out.close()
        errors = [line for line in lines if line.startswith(("error:", "hint:"))]
        return code, " ".join(errors if code != 0 and errors else lines[-2:])
