"""The one place that talks to tmux. tmux's own TMUX_TMPDIR (and TMUX, inside tmux) choose the
server, so tests and users keep fleets apart the way tmux users already do.

Each agent's pane carries a user option, @fleet-agent, naming its agent: panes are found by it
whatever the layout (a window per agent, or panes tiled in one window) and whatever title or
window name the agent's program sets."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from .errors import FleetError
from .processes import SHELLS

LAYOUTS = ("windows", "tiled")
TILED = "fleet"  # the name of the window that holds tiled panes
_PLACEHOLDER = "sleep 86400"


def _tmux(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which("tmux") is None:
        raise FleetError("tmux is not installed", "install it (Debian: apt-get install tmux), or use git fleet-run")
    proc = subprocess.run(["tmux", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise FleetError(f"tmux {args[0]} failed: {proc.stderr.strip() or 'exit ' + str(proc.returncode)}")
    return proc


def has_session(name: str) -> bool:
    return _tmux(["has-session", "-t", f"={name}"], check=False).returncode == 0


def new_session(name: str, window: str, cwd: str) -> None:
    _tmux(["new-session", "-d", "-s", name, "-n", window, "-c", cwd])


def panes(session: str) -> dict[str, dict[str, Any]]:
    """Agents' panes by agent: pane id, window, whether it is dead, its exit status, directory."""
    if shutil.which("tmux") is None or not has_session(session):
        return {}  # (no tmux, no panes: agents run by hand still report through their hooks)
    fmt = "\t".join(["#{@fleet-agent}", "#{pane_id}", "#{window_id}", "#{window_name}", "#{pane_dead}",
                     "#{pane_dead_status}", "#{pane_current_path}", "#{pane_pid}"])
    out = _tmux(["list-panes", "-s", "-t", f"={session}", "-F", fmt]).stdout
    found = {}
    for line in out.splitlines():
        agent, pane, wid, window, dead, status, path, pid = (line.split("\t") + [""] * 8)[:8]
        if agent:
            found[agent] = {"pane": pane, "window_id": wid, "window": window, "dead": dead == "1",
                            "status": status, "path": path, "pid": pid}
    return found


def _tiled_window(session: str) -> str | None:
    out = _tmux(["list-windows", "-t", f"={session}", "-F", "#{window_id}\t#{@fleet-tiled}"]).stdout
    return next((wid for wid, mark in (line.split("\t") for line in out.splitlines()) if mark == "1"), None)


def new_pane(session: str, agent: str, cwd: str, env: dict[str, str], command: str, layout: str) -> str:
    """A pane for the agent: a window of its own, or one more pane tiled in the fleet window.
    The pane stays open when its command ends, so a command that fails at once can be seen: it
    is made with a placeholder, marked remain-on-exit, then given the real command (setting the
    option after starting the command would race a command that exits at once)."""
    made = ["-d", "-P", "-F", "#{pane_id}", "-c", cwd, _PLACEHOLDER]
    window = _tiled_window(session) if layout == "tiled" else None
    if window is not None:
        pane = _tmux(["split-window", "-t", window, *made]).stdout.strip()
        _tmux(["select-layout", "-t", window, "tiled"])
    else:
        pane = _tmux(["new-window", "-t", f"={session}:", "-n", TILED if layout == "tiled" else agent, *made]).stdout.strip()
        if layout == "tiled":
            for option, value in (("@fleet-tiled", "1"), ("pane-border-status", "top"),
                                  ("pane-border-format", " #{@fleet-agent} ")):
                _tmux(["set-option", "-w", "-t", pane, option, value])
    _tmux(["set-option", "-p", "-t", pane, "@fleet-agent", agent])
    _tmux(["set-option", "-p", "-t", pane, "remain-on-exit", "on"])
    respawn(pane, cwd, env, command)
    return pane


def respawn(pane: str, cwd: str, env: dict[str, str], command: str) -> None:
    args = ["respawn-pane", "-k", "-t", pane, "-c", cwd]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    _tmux([*args, command])


def kill_pane(pane: str, window_id: str) -> None:
    """Close the pane; the rest of a tiled window is tiled again."""
    _tmux(["kill-pane", "-t", pane], check=False)
    _tmux(["select-layout", "-t", window_id, "tiled"], check=False)  # fails harmlessly once the window is gone


def only_idle_shells(session: str) -> bool:
    """Whether every pane of the session is a shell with nothing running in the foreground (or
    the fleet's watch, which only looks)."""
    out = _tmux(["list-panes", "-s", "-t", f"={session}", "-F", "#{@fleet-watch}\t#{pane_current_command}"],
                check=False).stdout
    return all(command.lstrip("-") in SHELLS or watching(mark)
               for mark, command in (line.split("\t", 1) for line in out.splitlines() if "\t" in line))


def watching(mark: str) -> bool:
    """Whether the pane marked `mark` (@fleet-watch: the pid of the watch in it, or when it was
    started there, for its first seconds) shows it now: that process runs a watch, in the
    foreground of its terminal, not stopped (a watch suspended with Ctrl-Z leaves the pane to
    whatever the person runs next)."""
    if mark.startswith("starting "):
        try:
            return time.time() - float(mark.split()[1]) < 10
        except ValueError:
            return False
    try:
        pid = int(mark)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (ValueError, OSError):
        return False
    # state, ppid, pgrp, session, tty, tpgid: the foreground group of its terminal is its own
    return (any(w.endswith(b"fleet-watch") for w in words) or b"watch" in words[2:]) \
        and fields[0] not in (b"T", b"t") and fields[2] == fields[5]


def mark_watch(pid: int | None) -> None:
    """Mark this process's pane (TMUX_PANE) as showing the watch, or no longer (None)."""
    pane = os.environ.get("TMUX_PANE")
    if pane and os.environ.get("TMUX"):
        _tmux(["set-option", "-p", "-t", pane, *(["@fleet-watch", str(pid)] if pid else ["-u", "@fleet-watch"])],
              check=False)


def start_watch(session: str, where: str) -> None:
    """git fleet-watch in the session's first window (the orchestrator's): typed at its shell
    ("window": q gives the shell back), or in a pane above the shell ("pane")."""
    first = f"={session}:^"
    # (by its path: a login shell's profile may set a PATH without this git-fleet)
    command = shlex.quote(shutil.which("git-fleet-watch") or "git-fleet-watch")
    # (marked before it starts: a down meanwhile counts it as idle; the watch puts its pid there)
    mark = ["@fleet-watch", f"starting {time.time()}"]
    if where == "window":
        pane = _tmux(["display-message", "-p", "-t", first, "#{pane_id}"]).stdout.strip()
        _tmux(["set-option", "-p", "-t", pane, *mark])
        _tmux(["send-keys", "-t", pane, command, "Enter"])
    else:
        pane = _tmux(["split-window", "-b", "-d", "-P", "-F", "#{pane_id}", "-l", "70%", "-t", first,
                      "sleep 0.2; exec " + command]).stdout.strip()
        _tmux(["set-option", "-p", "-t", pane, *mark])


def kill_session(session: str) -> None:
    _tmux(["kill-session", "-t", f"={session}"], check=False)


def interrupt(pane: str) -> None:
    _tmux(["send-keys", "-t", pane, "C-c"], check=False)


def attach(session: str, pane: str | None = None) -> None:
    """Attach to the session (switch to it inside tmux), showing the pane if given."""
    if pane:
        _tmux(["select-window", "-t", pane])
        _tmux(["select-pane", "-t", pane])
    if os.environ.get("TMUX"):
        _tmux(["switch-client", "-t", pane or f"={session}"])
    elif not os.isatty(0):
        raise FleetError("attaching needs a terminal, and there is none here",
                         f"run it in a terminal; to look without one: tmux capture-pane -p -t {pane or session}")
    else:
        os.execvp("tmux", ["tmux", "attach-session", "-t", f"={session}"])


def display_message(text: str) -> None:
    """Show `text` on tmux's message line of the client this process runs under (inside tmux),
    as text: tmux reads a message as a format, and #(...) in one would run a command."""
    _tmux(["display-message", "-d", "4000", text.replace("#", "##")], check=False)
