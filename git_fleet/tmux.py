"""The one place that talks to tmux. tmux's own TMUX_TMPDIR (and TMUX, inside tmux) choose the
server, so tests and users keep fleets apart the way tmux users already do."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from .errors import FleetError


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


def windows(session: str) -> dict[str, dict[str, Any]]:
    """Windows by name: whether its pane is dead, its exit status, its directory."""
    if not has_session(session):
        return {}
    fmt = "#{window_name}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_current_path}\t#{pane_pid}"
    out = _tmux(["list-windows", "-t", f"={session}", "-F", fmt]).stdout
    found = {}
    for line in out.splitlines():
        name, dead, status, path, pid = (line.split("\t") + [""] * 5)[:5]
        found[name] = {"dead": dead == "1", "status": status, "path": path, "pid": pid}
    return found


def new_window(session: str, name: str, cwd: str, env: dict[str, str], command: str) -> None:
    """A window that stays open when its command ends, so a command that fails at once can be
    seen: made with a placeholder, marked remain-on-exit, then given the real command (setting
    the option after starting the command would race a command that exits at once)."""
    _tmux(["new-window", "-d", "-t", f"={session}:", "-n", name, "-c", cwd, "sleep 86400"])
    _tmux(["set-option", "-w", "-t", f"={session}:{name}", "remain-on-exit", "on"])
    respawn(session, name, cwd, env, command)


def respawn(session: str, name: str, cwd: str, env: dict[str, str], command: str) -> None:
    args = ["respawn-pane", "-k", "-t", f"={session}:{name}", "-c", cwd]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    _tmux([*args, command])


def kill_window(session: str, name: str) -> None:
    _tmux(["kill-window", "-t", f"={session}:{name}"], check=False)


def attach(session: str, window: str | None = None) -> None:
    target = f"={session}" + (f":{window}" if window else "")
    if os.environ.get("TMUX"):
        _tmux(["switch-client", "-t", target])
    else:
        os.execvp("tmux", ["tmux", "attach-session", "-t", target])


def interrupt(session: str, name: str) -> None:
    _tmux(["send-keys", "-t", f"={session}:{name}", "C-c"], check=False)
