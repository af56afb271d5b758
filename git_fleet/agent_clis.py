"""The agent CLIs of a fleet: which one an agent runs, their hooks installed in each agent's
worktree by `git fleet-add` and `git fleet-set`, checked by `git fleet-doctor`, removed by
`git fleet-init --uninstall` (agent_settings.py has the files' formats), and Claude Code's trust."""

from __future__ import annotations

import os
import shlex
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from . import agent_settings, agent_state, agent_trust
from .config import Agent

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


def anchor(fleet: Fleet) -> agent_settings.Fleet:
    """What the hooks are installed for: the fleet's common dir and main worktree."""
    return str(fleet.repo.common_dir), str(fleet.main)


def targets(fleet: Fleet, agent: Agent) -> list[agent_settings.Target]:
    """The CLIs whose hooks go into the agent's worktree: Claude Code's always (a person may type
    `claude` in any worktree), Gemini CLI's and Codex's where the agent's command runs them."""
    cli = cli_of(command_of(fleet, agent))
    return [agent_settings.CLAUDE] + ([agent_settings.TARGETS[cli]] if cli in ("gemini", "codex") else [])


def tidy(fleet: Fleet) -> None:
    """Codex's hooks out of the main worktree once no agent runs codex (after rm, or a set of
    another command): the fleet's hooks there serve Codex agents only."""
    if not any(cli_of(command_of(fleet, a)) == "codex" for a in fleet.config.agents.values()):
        agent_settings.uninstall(fleet.main, agent_settings.CODEX)


def removed(fleet: Fleet, name: str) -> None:
    """What the fleet kept for an agent's CLIs, gone with the agent (git fleet-rm): its reports
    (a new agent of its name starts afresh), and Codex's hooks if no agent runs codex now."""
    agent_state.forget(str(fleet.repo.common_dir), name)
    tidy(fleet)


def install(fleet: Fleet, agent: Agent) -> list[Path]:
    """The hooks of the agent's CLIs in its worktree (if it has one here); the files written. A
    settings file the project tracks is never written: the commit hook stays the gate there."""
    where = fleet.locate(agent)
    if where is None or not where.is_dir():
        return []
    agent_settings.exclude(fleet.repo.common_dir)
    written = []
    for target in targets(fleet, agent):
        home = _home_of(fleet, target, where)
        if fleet.repo.is_tracked(home, target.path.as_posix()):
            fleet.tell([f"{target.path} is tracked in {home}: {target.cli}'s hooks are not installed there "
                        "(the commit hook still checks the zone)"])
            continue
        written.append(agent_settings.install(home, target, anchor(fleet)))
        if home != where:
            # (Codex 0.171 loads a linked worktree's project hooks, from the main worktree, only
            # where the worktree has a .codex/ of its own: an empty directory, which git never shows)
            (where / target.path.parent).mkdir(exist_ok=True)
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
            with suppress(OSError):  # (only if empty: the directory install made for Codex, nothing of anyone's)
                (where / agent_settings.CODEX.path.parent).rmdir()
    removed += filter(None, [agent_settings.uninstall(fleet.main, agent_settings.CODEX)])
    agent_settings.unexclude(fleet.repo.common_dir)
    return removed


def problems(fleet: Fleet, agent: Agent) -> list[str]:
    where = fleet.locate(agent)
    if where is None or not where.is_dir():
        return []
    found = []
    for target in targets(fleet, agent):
        home = _home_of(fleet, target, where)
        if fleet.repo.is_tracked(home, target.path.as_posix()):
            continue  # (never written: install says so, and the commit hook is the gate there)
        found += agent_settings.problems(home, target, anchor(fleet))
    return found


def _using(fleet: Fleet, agents: list[Agent], cli: str) -> list[Agent]:
    return [a for a in agents if cli_of(command_of(fleet, a)) == cli]


def _worktrees(fleet: Fleet, agents: list[Agent]) -> list[Path]:
    return [w for a in agents if (w := fleet.locate(a)) is not None and w.is_dir()]


def untrusted(fleet: Fleet, agents: list[Agent]) -> list[str]:
    """Which of the agents' CLIs would not run the fleet's hooks for want of their person's
    trust (agent_trust.py), each said in one line; [] when all would."""
    found = []
    if _using(fleet, agents, "claude") and not agent_trust.claude_trusts(fleet.main):
        found.append(f"Claude Code does not trust {fleet.main} yet: each agent asks, and runs without the fleet's "
                     "hooks until it is answered")
    gemini = [w for w in _worktrees(fleet, _using(fleet, agents, "gemini")) if not agent_trust.gemini_trusts(w)]
    if gemini:
        found.append(f"Gemini CLI does not trust {', '.join(map(str, gemini))}: it skips the fleet's hooks there "
                     "(and -p refuses to run)")
    if _using(fleet, agents, "codex") and agent_trust.codex_untrusted(fleet.main):
        found.append(f"Codex does not trust {fleet.main} or the fleet's hooks there: it skips them without a word")
    return found


def trust(fleet: Fleet, agents: list[Agent]) -> list[str]:
    """Each CLI the agents run told that the fleet's worktrees and hooks are trusted, as its own
    dialog would record it; what was done, one line each (and what is left to the person)."""
    done = []
    if _using(fleet, agents, "claude"):
        done.append(f"Claude Code trusts {fleet.main} and every agent's worktree of it "
                    f"({agent_trust.claude_trust(fleet.main)})")
    gemini = _worktrees(fleet, _using(fleet, agents, "gemini"))
    if gemini:
        path, kept = agent_trust.gemini_trust(gemini)
        done.append(f"Gemini CLI trusts {len(gemini) - len(kept)} worktree(s) ({path})")
        done += [f"warning: {path} says DO_NOT_TRUST for {w}: left as it is" for w in kept]
    if _using(fleet, agents, "codex"):
        path, conflicting = agent_trust.codex_trust(fleet.main)
        done.append(f"Codex trusts {fleet.main} and the fleet's hooks there ({path})")
        done += [f"warning: {path} cannot take [{t}] as it is: set it there by hand, or trust the hooks in codex's "
                 "/hooks" for t in conflicting]
    return done
