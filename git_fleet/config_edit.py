""".gitfleet.toml edited without losing comments: a new file from its template, and whole
`[agents.NAME]` and `[checkpoints.NAME]` tables added, replaced or cut in the text, which is
then parsed again; an edit that would not read back as intended is refused instead of written."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import tomli_w

from .config import _DURATION, Agent, Config, check_agent_name, parse
from .errors import ConfigError, UsageError

TEMPLATE = """\
# git-fleet configuration: the agents of this repository and the zones they own.
# See `git help fleet-init` and `git help fleet-add`. Edit by hand or with git fleet-add/fleet-rm;
# comments are kept. The copy in the main worktree is the one that counts; agents cannot change it.
version = 4

[fleet]
# The branch that agents start from and that checkpoints merge into.
base = {base}
# An agent's branch is <branch_prefix><agent> unless `git fleet-add --branch` names another.
branch_prefix = "fleet/"
# Where `git fleet-add` puts an agent's worktree, relative to the main worktree: {{repo}} is the
# main worktree's directory name, {{agent}} the agent's. Each clone keeps where its worktrees are
# (git config fleet-agent.NAME.worktree); an agent's own `worktree` key overrides this for all.
worktree = "../{{repo}}-{{agent}}"
# More agents than warn_agents draws a warning (coordination costs grow);
# more than max_agents is refused unless --force is given.
warn_agents = 7
max_agents = 10
# How agents' sessions start (git fleet-up, fleet-run); each agent may set its own session,
# model, command, resume and env. Placeholders: {{agent}} {{session}} {{session_id}} {{model}}
# {{worktree}} {{branch}} {{zone}} {{task}} {{port}}, filled in shell-quoted; {{session_id}} is the
# agent CLI's own session id (a new one to start with, the one its hooks reported to resume).
# Presets for other CLIs: git help fleet-set.
model = "sonnet"
command = "claude --session-id {{session_id}} --name {{session}} --model {{model}}"
resume = "claude --resume {{session_id}}"
# Seconds between agents' starts in `git fleet-up`, against API rate limits.
stagger = 5
# How `git fleet-up` shows agents: "windows" (a tmux window each) or "tiled" (panes in one window).
layout = "windows"
# Shared files every agent appends to (a changelog, a journal): open to every agent's zone and
# merged line by line (git's union merge) instead of conflicting.
union = []
# How `git fleet-sync` brings the base into agent branches: "merge", or "rebase" (only for
# branches nobody else has).
sync = "merge"
# Whether zones match paths ignoring case (ASCII letters, as git's core.ignoreCase does). One
# answer for the whole fleet, whatever each clone's core.ignoreCase says: set it to true when
# any clone is on a case-insensitive file system (macOS, Windows), where Docs/ is docs/.
# ignore_case = true

# Each agent owns the paths its zone matches. A zone is a list of gitignore patterns,
# relative to the repository root; the last pattern that matches a path decides, so a
# later "!pattern" takes paths back out, even below a directory an earlier pattern matched.
#
# [agents.backend]
# zone = ["src/backend/**", "!src/backend/**/*.md"]
# branch = "fleet/backend"

# Setting up a new worktree (git fleet-add): ignored files to copy from the main worktree, a
# command to run there, and a port range from which each agent gets its own ({{port}}, FLEET_PORT).
[setup]
copy = []
# run = "npm ci"
# ports = "4000-4099"

# The coordination bus: tasks/, results/ and master_plan.md, in this directory (relative to the
# main worktree), seen live by every worktree; a claim lapses unless renewed within `lease`.
[bus]
dir = "."
lease = "30m"

# Checkpoints: natural breakpoints at which `git fleet-merge --checkpoint NAME` merges the named
# agents into the base, in this order, all or nothing; `test` must pass on the merged result
# within `timeout` (default 30m), or the base does not move.
#
# [checkpoints.phase-1]
# agents = ["backend", "frontend"]
# test = "make test"
# timeout = "30m"
"""


def new_config_text(base: str) -> str:
    return TEMPLATE.format(base=_toml_value(base))


def _toml_value(value: object) -> str:
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _agent_table(agent: Agent) -> str:
    header = tomli_w.dumps({"agents": {agent.name: {"v": 1}}}).splitlines()[0]
    zone = "[" + ", ".join(_toml_value(p) for p in agent.zone) + "]"
    text = f"{header}\nzone = {zone}\nbranch = {_toml_value(agent.branch)}\n"
    if agent.worktree is not None:
        text += f"worktree = {_toml_value(agent.worktree)}\n"
    for key in Agent.SESSION_KEYS:
        value = getattr(agent, key)
        if value is not None:
            text += f"{key} = {_toml_value(value)}\n"
    if agent.env:
        text += "env = {" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in agent.env) + "}\n"
    if agent.port is not None:
        text += f"port = {agent.port}\n"
    if agent.sandbox is not None:
        text += f"sandbox = {_toml_value(agent.sandbox)}\n"
    if agent.sandbox_write:
        text += f"sandbox_write = {_toml_value(list(agent.sandbox_write))}\n"
    return text


def _at_least(text: str, version: int) -> str:
    """The text saying `version = N` at the top with N at least `version` (a key that needs it
    was written), as git-fleet-init's template writes it; a file without the line gets one."""
    m = re.search(r"(?m)^version\s*=\s*(\d+)\s*$", text)
    if m is None:
        return f"version = {version}\n" + text
    return text if int(m.group(1)) >= version else text[:m.start(1)] + str(version) + text[m.end(1):]


def _table_span(text: str, name: str) -> tuple[int, int] | None:
    """Line range [start, end) of the `[agents.NAME]` table, trailing blank lines included."""
    lines = text.splitlines(keepends=True)
    quoted = re.escape(name)
    header = re.compile(rf"^\s*\[\s*agents\s*\.\s*(?:{quoted}|\"{quoted}\"|'{quoted}')\s*\]\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if header.match(line.rstrip("\n"))), None)
    if start is None:
        return None
    end = start + 1
    while end < len(lines) and not re.match(r"^\s*\[", lines[end]):
        end += 1
    return start, end


def _expect(path: Path, text: str, want: Config) -> None:
    try:
        got: Config | None = parse(path, text)
    except ConfigError:
        got = None
    if got is None or got.agents != want.agents:
        raise ConfigError(
            f"{path}: cannot edit the agents in this file automatically",
            f"write each agent as its own [agents.NAME] table, or edit {path.name} by hand",
        )


def with_agent(cfg: Config, text: str, agent: Agent) -> str:
    """The config text with `agent` added, or replaced if it exists."""
    span = _table_span(text, agent.name)
    table = _agent_table(agent)
    if span:
        lines = text.splitlines(keepends=True)
        start, end = span
        # keep comments that sat at the end of the old table (they usually introduce the next one)
        tail = [ln for ln in lines[start + 1 : end] if ln.lstrip().startswith("#")]
        new = "".join(lines[:start]) + table + ("\n" if tail or end < len(lines) else "") + "".join(tail) + "".join(lines[end:])
    else:
        new = text if text.endswith("\n") or not text else text + "\n"
        new += ("\n" if new.strip() else "") + table
    if agent.sandbox is not None or agent.sandbox_write:
        new = _at_least(new, 5)
    agents = dict(cfg.agents)
    agents[agent.name] = agent
    _expect(cfg.path, new, Config(cfg.path, agents=agents))
    return new


def without_agent(cfg: Config, text: str, name: str) -> str:
    span = _table_span(text, name)
    if span is None:
        raise ConfigError(f"{cfg.path}: agent '{name}' is not written as an [agents.{name}] table",
                          f"remove it from {cfg.path.name} by hand")
    lines = text.splitlines(keepends=True)
    start, end = span
    if end == len(lines) and start > 0 and not lines[start - 1].strip():
        start -= 1  # the blank line with_agent put before a table it appended: add, then remove, is a no-op
    new = "".join(lines[:start] + lines[end:])
    agents = {k: v for k, v in cfg.agents.items() if k != name}
    _expect(cfg.path, new, Config(cfg.path, agents=agents))
    return new


def with_checkpoint(cfg: Config, text: str, name: str, agents: Sequence[str], test: str | None = None,
                    timeout: str | None = None) -> str:
    """The config text with a new [checkpoints.NAME] table merging `agents` in this order, whose
    `test` must pass on the merged result within `timeout`."""
    if name in cfg.checkpoints:
        raise UsageError(f"checkpoint '{name}' exists already in {cfg.path.name}",
                         f"its agents and test are in [checkpoints.{name}]; edit them there")
    try:
        check_agent_name(name)
    except UsageError:
        raise UsageError(f"'{name}' is not a valid checkpoint name",
                         "use letters, digits, '.', '_' and '-', starting with a letter or digit") from None
    if not agents:
        raise UsageError(f"checkpoint '{name}' needs its agents", "give --agent NAME for each, in merge order")
    for a in agents:
        cfg.agent(a)
    if len(set(agents)) != len(agents):
        raise UsageError(f"checkpoint '{name}' names an agent twice")
    if timeout is not None:
        m = _DURATION.fullmatch(timeout)
        if not m or int(m.group(1)) == 0:
            raise UsageError(f"'{timeout}' is not a duration", "write it as 90s, 30m, 2h or 1d")
    header = tomli_w.dumps({"checkpoints": {name: {"v": 1}}}).splitlines()[0]
    table = f"{header}\nagents = [" + ", ".join(_toml_value(a) for a in agents) + "]\n"
    if test is not None:
        table += f"test = {_toml_value(test)}\n"
    if timeout is not None:
        table += f"timeout = {_toml_value(timeout)}\n"
    new = (text if text.endswith("\n") or not text else text + "\n") + "\n" + table
    got = parse(cfg.path, new)
    if name not in got.checkpoints or got.agents != cfg.agents:
        raise ConfigError(f"{cfg.path}: cannot add checkpoint '{name}' automatically", f"edit {cfg.path.name} by hand")
    return new
