"""What an agent works with: its environment (FLEET_* and the placeholders of its command), its
brief (.fleet/brief.md: zone, branch, the bus, its tasks), its worktree or the error that says how
to restore it, a command run there (git fleet-run), and which agent a task command works for."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import durable, holds, sandbox_layout
from .config import Agent
from .errors import FleetError, UsageError
from .files import ignored_dir

if TYPE_CHECKING:
    from .bus.specs import Task
    from .fleet import Fleet


def claimed_tasks(fleet: Fleet, agent: Agent) -> list[Task]:
    """The tasks whose live claim is the agent's: claimed, or with a spec broken by hand since
    (the claim is the truth; its holder goes on with it and may finish it)."""
    now = time.time()
    return [t for t in fleet.bus().all() if t.claimed_by == agent.name and t.result is None
            and t.expires is not None and t.expires > now]


def values(fleet: Fleet, agent: Agent) -> dict[str, str]:
    """What a command template's placeholders stand for, for this agent."""
    tasks = claimed_tasks(fleet, agent)
    return {"agent": agent.name, "session": agent.session or agent.name, "model": agent.model or fleet.config.model,
            "worktree": str(fleet.worktree_of(agent)), "branch": agent.branch, "zone": " ".join(agent.zone),
            "task": tasks[0].name if tasks else "", "port": str(agent.port) if agent.port else ""}


def environment(fleet: Fleet, agent: Agent) -> dict[str, str]:
    """The fleet environment an agent's commands run with (its own env on top)."""
    v = values(fleet, agent)
    # run where the agent's worktree is, never where the orchestrator's GIT_DIR points
    env = {**fleet.repo.env_in(Path(v["worktree"])), "FLEET_AGENT": agent.name, "FLEET_SESSION": v["session"],
           "FLEET_MODEL": v["model"], "FLEET_ZONE": "\n".join(agent.zone), "FLEET_BRANCH": agent.branch,
           "FLEET_WORKTREE": v["worktree"], "FLEET_BUS": str(fleet.bus().root), "FLEET_TASK": v["task"],
           "FLEET_BRIEF": str(fleet.worktree_of(agent) / ".fleet" / "brief.md"),
           **({"FLEET_PORT": str(agent.port)} if agent.port else {})}
    env.update(dict(agent.env))
    return env


def worker(fleet: Fleet, given: str | None) -> str:
    """Who is working: --agent, else $FLEET_AGENT, else the agent whose worktree this is."""
    name = given or os.environ.get("FLEET_AGENT") or (a.name if (a := fleet.current_agent()) else None)
    if not name:
        raise UsageError("who is working? this is not an agent's worktree",
                         "give --agent NAME (or set FLEET_AGENT)")
    return fleet.config.agent(name).name  # an unknown name is an error, never a claim held by nobody


def missing_worktree(fleet: Fleet, agent: Agent) -> FleetError:
    where = fleet.planned_worktree(agent)
    make = f"git worktree add {shlex.quote(str(where))} {shlex.quote(agent.branch)}"
    moved = next((w for w in fleet.worktrees() if w.prunable and agent.branch in (w.branch, w.busy)), None)
    if moved is not None:  # its record is there, its directory is not: moved by hand, or deleted
        return FleetError(f"agent '{agent.name}' has no worktree in this repository: the one at {moved.path} is "
                          "gone (moved by hand, or deleted)",
                          f"moved: git worktree repair <its new place>; deleted: git worktree prune && {make}")
    return FleetError(f"agent '{agent.name}' has no worktree in this repository (expected at {where})",
                      f"restore it from its branch: {make}")


def require_worktree(fleet: Fleet, agent: Agent) -> Path:
    """The agent's registered worktree, or the error that says how to restore it."""
    where = fleet.locate(agent)
    if where is None or not where.is_dir():
        raise missing_worktree(fleet, agent)
    return where


def run(fleet: Fleet, name: str, argv: Sequence[str], sandboxed: bool | None = None) -> int:
    """Run a command in an agent's worktree with its environment, in its sandbox if it runs in
    one (sandbox_layout.wanted); its exit status is returned."""
    agent = fleet.config.agent(name)
    where = require_worktree(fleet, agent)
    if not argv:
        raise UsageError("no command given", f"git fleet-run {name} -- COMMAND [ARGS...]")
    holds.hold_to_run(fleet, agent.name)  # (a fleet across machines: it runs on this one, as with git fleet-up)
    write_brief(fleet, agent)
    env, line = environment(fleet, agent), list(argv)
    if sandbox_layout.wanted(fleet, agent, sandboxed):
        confinement = sandbox_layout.confine(fleet, agent, where)
        env.update(confinement.env)
        line = confinement.command(line)
    try:
        return subprocess.run(line, cwd=where, env=env).returncode
    except FileNotFoundError:
        raise FleetError(f"command not found: {argv[0]}", "check the command, or your PATH") from None


def rewrite_briefs(fleet: Fleet, names: Sequence[str] = ()) -> None:
    """The briefs of the named agents (all if none) written again: their tasks changed. An agent
    whose CLI has hooks is told at its next prompt or tool call (agent_brief.py)."""
    for name in names or list(fleet.config.agents):
        if name in fleet.config.agents:
            write_brief(fleet, fleet.config.agents[name])


def write_brief(fleet: Fleet, agent: Agent) -> Path | None:
    """.fleet/brief.md in the agent's worktree (ignored by git): its zone, branch, the bus and its
    claimed tasks, for an agent that reads its instructions from a file. None when the agent
    has no worktree here."""
    tree = fleet.locate(agent)
    if tree is None or not tree.is_dir():
        return None
    where = tree / ".fleet"
    with fleet.repo.scratch() as staging:
        ignored_dir(where, "git-fleet's files for this agent: never tracked", staging)
    bus = fleet.bus()
    tasks = claimed_tasks(fleet, agent)
    lines = [f"# Brief for agent {agent.name}", "",
             f"You work in {tree} on branch {agent.branch}.", "",
             "## Your zone", "",
             "You may change only the paths these gitignore patterns match (the last match decides):", ""]
    lines += [f"- `{p}`" for p in agent.zone]
    lines += ["", "A commit that touches anything else is rejected. `git fleet-who PATH` says who owns a path.",
              "Work for another agent's paths goes to that agent; anything else to the orchestrator.", "",
              "## Tasks", "", f"The task bus is {bus.root} (tasks/, results/, master_plan.md).", ""]
    waiting = [t for t in bus.all() if t.status == "open" and t.agent == agent.name]
    if tasks:
        lines += [f"Claimed by you: {t.name} {t.title} ({t.path})" for t in tasks] + [""]
    else:
        lines += ["You hold no task now.", ""]
    if waiting:
        lines += [f"Added for you, to claim: {t.name} {t.title} ({t.path})" for t in waiting] + [""]
    lines += ["- `git fleet-task claim` takes the next task for you (`--wait` blocks until there is one);",
              "- `git fleet-task renew ID` while you work on it, so your lease does not lapse;",
              "- `git fleet-task done ID --result-file FILE` (or `fail ID --reason ...`) when you finish.", ""]
    durable.replace(where / "brief.md", "\n".join(lines))
    return where / "brief.md"

