"""The sandbox an agent runs in: what this system supports, which local servers are masked,
and the command line that runs a command in it (sandbox_run.py does the work).
(sandbox_layout.py says what an agent may write: the layout that makes that write set a boundary)."""

from __future__ import annotations

import base64
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from . import landlock, namespaces, seccomp

RUNNER = Path(__file__).resolve().parent / "sandbox_run.py"
MIN_ABI = landlock.MIN_ABI
# what leads a process to a local server that acts for it, outside the sandbox
CLEARED = ("TMUX", "TMUX_PANE", "DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY", "DOCKER_HOST",
           "SSH_AUTH_SOCK", "GPG_AGENT_INFO", "XDG_RUNTIME_DIR")


@dataclass(frozen=True)
class Support:
    landlock_abi: int
    namespaces: str | None  # why not, or None

    def missing(self) -> str | None:
        """What this system lacks for the sandbox, in one line; None when it has it all."""
        lacks = []
        if self.landlock_abi < MIN_ABI:
            lacks.append(f"Landlock ABI {MIN_ABI} or newer (this kernel: "
                         + (f"ABI {self.landlock_abi})" if self.landlock_abi else "none, or switched off)"))
        if self.namespaces:
            lacks.append(self.namespaces)
        return "; ".join(lacks) or None


def support() -> Support:
    return Support(landlock.abi(), namespaces.supported() or (None if seccomp.supported() else
                                                              "the sandbox's seccomp filter is written for x86_64"))


def masks(env: dict[str, str] | None = None) -> list[str]:
    """The sockets (and directories of them) of the local servers a sandboxed process must not
    reach: tmux's (the default place, TMUX_TMPDIR's, the one $TMUX names), the runtime directory
    (D-Bus, systemd, Wayland), X11's, Docker's and Podman's, the SSH and GPG agents'."""
    env = dict(os.environ if env is None else env)
    uid = os.getuid()
    # (a trailing /: a directory made if missing, so that a server started later is hidden too)
    found = [f"/tmp/tmux-{uid}/", env.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}", "/tmp/.X11-unix",
             "/var/run/docker.sock", "/run/docker.sock", "/run/podman", "/run/dbus"]
    if env.get("TMUX_TMPDIR"):
        found.append(os.path.join(env["TMUX_TMPDIR"], f"tmux-{uid}") + "/")
    if env.get("TMUX"):
        found.append(os.path.dirname(env["TMUX"].split(",", 1)[0]))
    if env.get("SSH_AUTH_SOCK"):
        found.append(os.path.dirname(env["SSH_AUTH_SOCK"]))
    bus = env.get("DBUS_SESSION_BUS_ADDRESS", "")
    if bus.startswith("unix:path="):
        found.append(bus[len("unix:path="):].split(",", 1)[0])
    return list(dict.fromkeys(os.path.normpath(p) + ("/" if p.endswith("/") else "") for p in found if p))


def _measured(env: dict[str, str]) -> list[str]:
    """Where coverage.py, measuring the processes a test suite starts (its subprocess patch,
    COVERAGE_PROCESS_CONFIG), writes their data: writable for them in the sandbox too, or each
    sandboxed Python would fail at its exit. Nothing where no measurement runs."""
    config = env.get("COVERAGE_PROCESS_CONFIG")
    if not config:
        return []
    try:
        data_file = json.loads(base64.b64decode(config)).get("data_file")
    except (ValueError, AttributeError):
        return []
    return [os.path.dirname(os.path.abspath(data_file))] if isinstance(data_file, str) and data_file else []


def command(argv: list[str], write: list[str], ports: list[int], env: dict[str, str] | None = None,
            protect: list[str] | None = None, links: list[str] | None = None, keep: list[str] | None = None) -> list[str]:
    """The command line that runs `argv` in the sandbox: writes only beneath `write` but to the
    files `protect` (which are in it), new symbolic links in `links`, TCP connects only to `ports`.
    /tmp, /var/tmp and /dev/shm are its own (namespaces.private_temporary), but for the
    directories in them it must see: `write`, `keep`, and what any command needs (the home
    directory, PATH, this Python and this package)."""
    env = dict(os.environ if env is None else env)
    line = [os.path.realpath(sys.executable), "-I", "-S", str(RUNNER)]
    needed = [*(keep or []), env.get("HOME", ""), *env.get("PATH", "").split(os.pathsep), sys.prefix,
              str(RUNNER.parent.parent)]
    for k in dict.fromkeys(os.path.realpath(k) for k in needed if k and os.path.isabs(k)):
        line += ["--keep", k]
    for w in [*write, *_measured(env)]:
        line += ["--write", w]
    for f in protect or ():
        line += ["--protect", f]
    for d in links or ():
        line += ["--links", d]
    for p in ports:
        line += ["--port", str(p)]
    for m in masks(env):
        line += ["--mask", m]
    for name in CLEARED:
        line += ["--clear", name]
    return [*line, "--", *argv]
