"""Agents' sessions in tmux: one session per repository, one window per agent, plus the
orchestrator's window; staggered starts, resume after a restart, clean stops."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import agent_clis, agent_state, brief, durable, holds, sandbox_layout, tmux
from .config import Agent
from .errors import FleetError
from .templates import expand

if TYPE_CHECKING:
    from .fleet import Fleet

ORCHESTRATOR = "orchestrator"


def session_name(main: Path) -> str:
    """fleet-<repository>-<hash of its path>: readable, and two repositories of one name stay apart."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", main.name).strip("-") or "repo"
    return f"fleet-{base}-{hashlib.sha1(str(main).encode()).hexdigest()[:6]}"


@dataclass
class UpResult:
    session: str
    started: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)  # left alone
    failed: dict[str, FleetError] = field(default_factory=dict)  # agent -> why

    def failure(self) -> FleetError | None:
        """One error for the agents that failed to start, each with why, and their hints; None if none did."""
        if not self.failed:
            return None
        failed = self.failed.values()
        return FleetError("\n".join(e.message for e in failed), "\n".join(dict.fromkeys(e.hint for e in failed if e.hint)))


class Sessions:
    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.name = session_name(fleet.main)
        self.state_path = fleet.repo.common_dir / "fleet" / "sessions.json"

    def _state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_path.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def _record(self, agent: str, **facts: Any) -> None:
        state = self._state()
        state[agent] = {**state.get(agent, {}), **facts}
        self.state_path.parent.mkdir(exist_ok=True)
        durable.replace(self.state_path, json.dumps(state, indent=2))

    def _env(self, agent: Agent) -> dict[str, str]:
        full = brief.environment(self.fleet, agent)
        return {k: v for k, v in full.items() if k.startswith("FLEET_") or k in dict(agent.env)}

    def session_id(self, agent: Agent) -> str | None:
        """The agent CLI's own id of the agent's session: the last its hooks reported (a /clear
        starts another), else the one it was started with."""
        reported = agent_state.read(str(self.fleet.repo.common_dir), agent.name)
        if reported and reported.get("launched_session"):  # (not a session its person ran there by hand)
            return str(reported["launched_session"])
        recorded = self._state().get(agent.name, {}).get("session_id")
        return str(recorded) if recorded else None

    def _command(self, agent: Agent, resume: bool) -> tuple[str, str, bool]:
        """The command that starts (or resumes) the agent, the session id it runs with, and
        whether it resumes: a resume that needs a {session_id} nobody reported starts afresh."""
        cfg = self.fleet.config
        values = brief.values(self.fleet, agent)
        template = agent.resume or cfg.resume
        known = self.session_id(agent) if resume else None
        if resume and (known or "{session_id}" not in template):
            values["session_id"] = known or ""
            return expand(template, values), values["session_id"], True
        command = agent.command or cfg.command
        values["session_id"] = str(uuid.uuid4())
        # (recorded only when the CLI is given it: an id it never had would be resumed in vain)
        return expand(command, values), values["session_id"] if "{session_id}" in command else "", False

    def choose(self, names: Sequence[str], force: bool) -> tuple[list[Agent], str | None]:
        """The agents `up` starts, the named ones or all, and a warning when they are many (more
        than warn_agents); more than max_agents is refused unless `force`."""
        cfg = self.fleet.config
        chosen = [cfg.agent(n) for n in names] if names else list(cfg.agents.values())
        if len(chosen) > cfg.max_agents and not force:
            raise FleetError(f"refusing to start {len(chosen)} agents: the limit is {cfg.max_agents}",
                             "beyond 10 agents coordination costs exceed the benefits; pass --force to go ahead")
        many = len(chosen) > cfg.warn_agents
        return chosen, f"starting {len(chosen)} agents; beyond {cfg.warn_agents} coordination costs grow" if many else None

    def named(self, names: Sequence[str]) -> list[str]:
        """The agents named, each checked to be one (else the config's error), or all of them."""
        chosen = list(names) or list(self.fleet.config.agents)
        for n in chosen:
            self.fleet.config.agent(n)
        return chosen

    def up(self, agents: list[Agent], stagger: float, layout: str | None = None, settle: float = 0.5,
           tell: Callable[[str], None] | None = None, sandboxed: bool | None = None, watch: str = "window") -> UpResult:
        """Start (or resume) each agent not running yet; `tell` hears of each start and each wait.
        A session made now gets git fleet-watch (tmux.start_watch) unless `watch` is "none"."""
        result = UpResult(self.name)
        layout = layout or self.fleet.config.layout
        made = not tmux.has_session(self.name)
        self._ensure_session()
        panes = tmux.panes(self.name)
        state = self._state()
        first = True
        launched: list[str] = []
        for agent in agents:
            pane = panes.get(agent.name)
            if pane is not None and not pane["dead"]:
                result.running.append(agent.name)
                continue
            try:
                brief.require_worktree(self.fleet, agent)
                holds.hold_to_run(self.fleet, agent.name)  # (a fleet across machines: one machine runs it)
            except FleetError as e:
                result.failed[agent.name] = e
                continue
            if not first and stagger > 0:
                if tell is not None:
                    tell(f"waiting {stagger:g} s before starting {agent.name} (stagger, against rate limits)")
                time.sleep(stagger)  # against API rate limits
            first = False
            try:
                resume = self._launch(agent, pane, agent.name in state, layout, sandboxed)
            except FleetError as e:
                result.failed[agent.name] = FleetError(f"agent '{agent.name}': {e.message}", e.hint)
                continue
            (result.resumed if resume else result.started).append(agent.name)
            launched.append(agent.name)
            if tell is not None:
                tell(f"{agent.name}: {'resumed' if resume else 'started'} in {self.name}:{agent.name}")
        result.failed.update(self._exited_at_once(launched, settle))
        if made and watch != "none":
            tmux.start_watch(self.name, watch)
        return result

    def _exited_at_once(self, launched: list[str], settle: float, what: str = "command") -> dict[str, FleetError]:
        """The agents among `launched` whose command ended within `settle` seconds, and why."""
        if not launched or settle <= 0:
            return {}
        time.sleep(settle)
        panes = tmux.panes(self.name)
        dead = [n for n in launched if n in panes and panes[n]["dead"]]
        deadline = time.time() + 2.0
        while any(not panes[n]["status"] for n in dead) and time.time() < deadline:
            time.sleep(0.05)  # tmux can mark a pane dead a moment before it has the exit status
            panes = tmux.panes(self.name)
        return {name: FleetError(
            f"agent '{name}': its {what} exited at once"
            + (f" (status {panes[name]['status']})" if panes[name]["status"] else ""),
            f"look at its pane (git fleet-attach {name}) or run its command by hand: git fleet-run {name} -- ...")
            for name in dead}

    def _ensure_session(self) -> None:
        if not tmux.has_session(self.name):
            tmux.new_session(self.name, ORCHESTRATOR, str(self.fleet.main))

    def _launch(self, agent: Agent, pane: dict[str, Any] | None, resume: bool, layout: str,
                sandboxed: bool | None = None) -> bool:
        """Run the agent's command (or its resume command) in its pane, made if missing, in its
        sandbox if it runs in one; whether it resumed."""
        where = str(brief.require_worktree(self.fleet, agent))
        brief.write_brief(self.fleet, agent)
        agent_clis.install(self.fleet, agent)  # (current: the Python or the package may have moved)
        agent_state.rotate(str(self.fleet.repo.common_dir), agent.name)
        command, session_id, resumed = self._command(agent, resume)
        env = self._env(agent)
        confined = sandbox_layout.wanted(self.fleet, agent, sandboxed)
        if confined:
            confinement = sandbox_layout.confine(self.fleet, agent, Path(where))
            env.update(confinement.env)
            command = confinement.shell(command)
        if pane is not None:
            tmux.respawn(pane["pane"], where, env, command)
        else:
            tmux.new_pane(self.name, agent.name, where, env, command, layout)
        self._record(agent.name, started=time.time(), session=brief.values(self.fleet, agent)["session"],
                     session_id=session_id or None, sandboxed=confined)
        return resumed

    def ps(self) -> list[dict[str, Any]]:
        panes = tmux.panes(self.name)
        state = self._state()
        rows = []
        for agent in self.fleet.config.agents.values():
            p = panes.get(agent.name)
            live = bool(p and not p["dead"])
            since = state.get(agent.name, {}).get("started")
            values = brief.values(self.fleet, agent)
            reported = agent_state.read(str(self.fleet.repo.common_dir), agent.name)
            row = {"agent": agent.name, "running": live, "since": int(since) if since and live else None,
                   "session": values["session"], "model": values["model"], "tmux": self.name,
                   "window": p["window"] if p else None, "pane": p["pane"] if p else None,
                   "state": "running" if live else "stopped", "state_since": int(since) if since and live else None,
                   "tool": None, "message": None, "session_id": state.get(agent.name, {}).get("session_id"),
                   "refused": 0, "reported": False,
                   "sandboxed": bool(state.get(agent.name, {}).get("sandboxed")) if live else None}
            if reported is not None:
                # a session the fleet started whose window closed (or was killed) reports no more;
                # one its person runs by hand, outside tmux, is taken at its word
                gone = not live and reported["launched"] and reported["state"] != agent_state.EXITED
                row.update(state=agent_state.EXITED if gone else reported["state"],
                           state_since=int(float(str(reported["since"]))) if not gone else row["state_since"],
                           tool=reported["tool"], message=reported["message"],
                           session_id=reported["session"] or row["session_id"], refused=reported["refused"],
                           reported=True)
            rows.append(row)
        return rows

    def show(self, pane: str | None = None) -> None:
        """Attach to the session (switch to it inside tmux), showing the pane if given."""
        tmux.attach(self.name, pane)

    def attach(self, agent: str | None = None) -> None:
        """Attach to the running session (see show), at `agent`'s pane if given; refused when the
        fleet, or that agent, is not running in it."""
        if agent:
            self.fleet.config.agent(agent)
        if not tmux.has_session(self.name):
            raise FleetError("the fleet is not running", "start it with git fleet-up")
        pane = self.pane(agent) if agent else None
        if agent and pane is None:
            raise FleetError(f"agent '{agent}' is not in the fleet's tmux session", f"start it with git fleet-up {agent}")
        self.show(pane)

    def watching(self, on: bool) -> None:
        """Mark this process's tmux pane as showing the watch (down counts it as idle), or no longer."""
        tmux.mark_watch(os.getpid() if on else None)

    def say(self, text: str) -> None:
        """Tell the person on tmux's message line (a process running inside tmux)."""
        tmux.display_message(text)

    def pane(self, name: str) -> str | None:
        p = tmux.panes(self.name).get(name)
        return p["pane"] if p else None

    def running(self, names: list[str]) -> list[str]:
        panes = tmux.panes(self.name)
        return [n for n in names if n in panes and not panes[n]["dead"]]

    def down(self, names: list[str], grace: float = 3.0) -> list[str]:
        """Stop agents: Ctrl-C first (a clean stop for an agent CLI), then close the pane."""
        panes = tmux.panes(self.name)
        stopped = [n for n in names if n in panes]
        for n in stopped:
            if not panes[n]["dead"]:
                tmux.interrupt(panes[n]["pane"])
        deadline = time.time() + grace
        while time.time() < deadline and self.running(stopped):
            time.sleep(0.1)
        for n in stopped:
            tmux.kill_pane(panes[n]["pane"], panes[n]["window_id"])
        return stopped

    def resume(self, agent: Agent, settle: float = 0.5) -> bool:
        """Resume the agent's session; False when there was no session id to resume, and it started afresh."""
        brief.require_worktree(self.fleet, agent)
        self._ensure_session()
        resumed = self._launch(agent, tmux.panes(self.name).get(agent.name), True, self.fleet.config.layout)
        for err in self._exited_at_once([agent.name], settle, "resume command").values():
            raise err
        return resumed

    def close_if_idle(self) -> bool:
        """Close the fleet's tmux session once no agent is in it and the rest (the orchestrator's
        window that `up` opened) is an idle shell: `down` of every agent closes what `up` opened."""
        if not tmux.has_session(self.name) or tmux.panes(self.name) or not tmux.only_idle_shells(self.name):
            return False
        tmux.kill_session(self.name)
        return True
