"""A new agent's worktree made ready: the ignored files it needs copied from the main worktree
([setup] copy), its setup command run there ([setup] run), and a port of its own ([setup] ports)."""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

from . import brief, sandbox_layout
from .config import Agent
from .errors import FleetError

if TYPE_CHECKING:
    from .fleet import Fleet, Report


def free_port(fleet: Fleet) -> int | None:
    if fleet.config.ports is None:
        return None
    low, high = fleet.config.ports
    taken = {a.port for a in fleet.config.agents.values()}
    port = next((p for p in range(low, high + 1) if p not in taken), None)
    if port is None:
        raise FleetError(f"no free port left in setup.ports ({low}-{high})", "widen the range in [setup] ports")
    return port


def set_up(fleet: Fleet, agent: Agent, report: Report) -> None:
    """Copy the configured ignored files into the new worktree, then run the setup command there."""
    where = fleet.worktree_of(agent)
    for rel in fleet.config.setup_copy:
        src = fleet.main / rel
        if src.is_file():
            (where / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, where / rel)
        elif src.is_dir():
            shutil.copytree(src, where / rel, dirs_exist_ok=True)
        else:
            report.warnings.append(f"setup.copy: {rel} does not exist in the main worktree; not copied")
    if fleet.config.setup_run:
        env, line = brief.environment(fleet, agent), ["sh", "-c", fleet.config.setup_run]
        if sandbox_layout.wanted(fleet, agent):  # (code from the repository, run as the agent would)
            confinement = sandbox_layout.confine(fleet, agent, where)
            env.update(confinement.env)
            line = confinement.command(line)
        proc = subprocess.run(line, cwd=where, env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = "\n".join("  " + line for line in proc.stdout.decode("utf-8", "replace").rstrip().splitlines()[-15:])
            raise FleetError(f"agent '{agent.name}' was added, but its setup `{fleet.config.setup_run}` failed "
                             f"(exit {proc.returncode}) in {where}:\n{tail}",
                             f"fix it, then run it again: git fleet-run {agent.name} -- sh -c "
                             f"'{fleet.config.setup_run}'")

