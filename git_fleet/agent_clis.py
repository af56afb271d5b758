"""The agent CLIs of a fleet: which one an agent runs, their hooks installed in each agent's
worktree by `git fleet-add` and `git fleet-set`, checked by `git fleet-doctor`, removed by
`git fleet-init --uninstall` (agent_settings.py has the files' formats), and Claude Code's trust."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from . import agent_settings
from .config import Agent
from .gateway import plumbing

if TYPE_CHECKING:
    from .fleet import Fleet

KNOWN = ("claude", "gemini", "codex", "aider")


def cli_of(command: str) -> str | None:
    """The agent CLI a command template runs (its first word that is not an assignment or a
    wrapper), or None for another program."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    for word in words:
        if "=" in word and not word.startswith("-") or word in ("env", "exec", "command", "nice", "nohup"):
            continue
        name = os.path.basename(word)
        return name if name in KNOWN else None
    return None


def command_of(fleet: Fleet, agent: Agent) -> str:
    return agent.command or fleet.config.command


def targets(fleet: Fleet, agent: Agent) -> list[agent_settings.Target]:
    """The CLIs whose hooks go into the agent's worktree: Claude Code's always (a person may type
    `claude` in any worktree), Gemini CLI's and Codex's where the agent's command runs them."""
    cli = cli_of(command_of(fleet, agent))
    return [agent_settings.CLAUDE] + ([agent_settings.TARGETS[cli]] if cli in ("gemini", "codex") else [])


def install(fleet: Fleet, agent: Agent) -> list[Path]:
    """The hooks of the agent's CLIs in its worktree (if it has one here); the files written. A
    settings file the project tracks is never written: the commit hook stays the gate there."""
    where = fleet.locate(agent)
    if where is None or not where.is_dir():
        return []
    agent_settings.exclude(fleet.repo.common_dir)
    written = []
    for target in targets(fleet, agent):
        where = _home_of(fleet, target, where)
        if plumbing.is_tracked(where, target.path.as_posix()):
            fleet.tell([f"{target.path} is tracked in {where}: {target.cli}'s hooks are not installed there "
                        "(the commit hook still checks the zone)"])
            continue
        written.append(agent_settings.install(where, target))
    return written


def _home_of(fleet: Fleet, target: agent_settings.Target, worktree: Path) -> Path:
    """Where a CLI reads the hooks for a worktree: its own top, but for Codex (0.171), which reads
    a linked worktree's `.codex/` from the main worktree (the gate, given the agent's directory,
    finds the agent; in the main worktree it lets everything through)."""
    return fleet.main if target is agent_settings.CODEX else worktree


def uninstall(fleet: Fleet) -> list[Path]:
    """The hooks out of every agent's worktree, and the settings out of info/exclude."""
    removed: list[Path] = []
    for agent in fleet.config.agents.values():
        where = fleet.locate(agent)
        if where is not None and where.is_dir():
            removed += filter(None, (agent_settings.uninstall(where, t) for t in agent_settings.TARGETS.values()))
    removed += filter(None, [agent_settings.uninstall(fleet.main, agent_settings.CODEX)])
    agent_settings.unexclude(fleet.repo.common_dir)
    return removed


def problems(fleet: Fleet, agent: Agent) -> list[str]:
    where = fleet.locate(agent)
    if where is None or not where.is_dir():
        return []
    return [p for t in targets(fleet, agent) for p in agent_settings.problems(_home_of(fleet, t, where), t)]


def trust(fleet: Fleet) -> Path:
    """Claude Code told that the repository is trusted (agent_settings.trust); the file written."""
    return agent_settings.trust(fleet.main)


def untrusted(fleet: Fleet, agents: list[Agent]) -> bool:
    """Whether Claude Code would ask to trust the agents' worktrees (and skip their hooks until
    it is answered): some agent runs claude and the repository is not trusted."""
    runs_claude = any(cli_of(command_of(fleet, a)) == "claude" for a in agents)
    return runs_claude and agent_settings.trusted(fleet.main) is not True
