""".gitfleet.toml: read and validate into frozen dataclasses, and edit it without losing comments.

Every error names the file and line. Edits append or cut whole `[agents.NAME]` tables in the
text and then parse the result again: the user's comments and layout stay as they were, and
an edit that would not read back as intended is refused instead of written.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .errors import ConfigError, UsageError
from .zones import PatternError, Zone

CONFIG_NAME = ".gitfleet.toml"
SCHEMA_VERSION = 4
# keys a file may use only once it says `version = N`, so that a git-fleet too old for them says
# "written for a newer git-fleet" instead of "unknown key": (table, key) -> the version
INTRODUCED = {("checkpoints.*", "timeout"): 2, ("fleet", "ignore_case"): 3}
DEFAULT_TEST_TIMEOUT = 30 * 60

DEFAULT_BASE = "main"
DEFAULT_PREFIX = "fleet/"
DEFAULT_WORKTREE = "../{repo}-{agent}"
WORKTREE_PLACEHOLDERS = ("repo", "agent")
DEFAULT_WARN = 7
DEFAULT_MAX = 10

DEFAULT_MODEL = "sonnet"
DEFAULT_COMMAND = "claude --name {session} --model {model}"
DEFAULT_RESUME = "claude --resume {session}"
PLACEHOLDERS = ("agent", "session", "model", "worktree", "branch", "zone", "task", "port")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


_DURATION = re.compile(r"\s*(\d+)\s*([smhd]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in "90", "90s", "30m", "2h" or "1d"."""
    m = _DURATION.fullmatch(text)
    if not m:
        raise UsageError(f"'{text}' is not a duration", "write it as 90s, 30m, 2h or 1d")
    return int(m.group(1)) * _UNITS[m.group(2)]


def format_duration(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def unknown_placeholder(template: str) -> str | None:
    """The first {name} in a command template that is not a placeholder; None if all are."""
    for m in _PLACEHOLDER.finditer(template):
        if m.group(1) is not None and m.group(1) not in PLACEHOLDERS:
            return m.group(1)
    return None


def expand_worktree(template: str, agent: str, repo: str) -> str:
    """A worktree path template filled in: {agent} the agent's name, {repo} the main worktree's
    directory name ({{ and }} stand for braces)."""
    values = {"agent": agent, "repo": repo}

    def one(m: re.Match[str]) -> str:
        return m.group(0)[0] if m.group(1) is None else values[m.group(1)]

    return _PLACEHOLDER.sub(one, template)


def _unknown_in_path(template: str) -> str | None:
    """The first {name} of a worktree path that is not a placeholder, or a lone brace as "{"."""
    if re.search(r"[{}]", _PLACEHOLDER.sub("", template)):
        return "{"  # a brace is written {{ or }}
    return next((m.group(1) for m in _PLACEHOLDER.finditer(template)
                 if m.group(1) is not None and m.group(1) not in WORKTREE_PLACEHOLDERS), None)


def expand(template: str, values: dict[str, str]) -> str:
    """Fill a command template; every value is shell-quoted ({{ and }} stand for braces)."""
    import shlex

    def one(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return m.group(0)[0]
        return shlex.quote(values.get(m.group(1), ""))

    return _PLACEHOLDER.sub(one, template)


_AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

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
# model, command, resume and env. Placeholders: {{agent}} {{session}} {{model}} {{worktree}}
# {{branch}} {{zone}} {{task}} {{port}}, filled in shell-quoted. Presets for other CLIs: git help fleet-set.
model = "sonnet"
command = "claude --name {{session}} --model {{model}}"
resume = "claude --resume {{session}}"
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


@dataclass(frozen=True)
class Agent:
    name: str
    zone: tuple[str, ...]
    branch: str
    worktree: str | None = None  # as written ({repo}, {agent}), relative to the main worktree; None: [fleet] worktree
    # how its session is run; None: the fleet-wide default ([fleet] model, command, resume)
    session: str | None = None
    model: str | None = None
    command: str | None = None
    resume: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    port: int | None = None  # its own port from [setup] ports, for parallel dev servers
    ignore_case: bool = False  # the fleet's [fleet] ignore_case, which its zone follows

    SESSION_KEYS = ("session", "model", "command", "resume")

    def compiled_zone(self) -> Zone:
        return Zone(self.zone, self.ignore_case)


@dataclass(frozen=True)
class Checkpoint:
    name: str
    agents: tuple[str, ...]  # merged in this order
    test: str | None = None  # a command the merged result must pass
    timeout: int = DEFAULT_TEST_TIMEOUT  # seconds the test may take; then it is stopped, and fails

    def tag(self, round_: int) -> str:
        """The tag of a round of this checkpoint: fleet/NAME for the first (as git-fleet always
        named it), fleet/NAME@N after it. A checkpoint's name has no '@', so no round of one
        checkpoint can be named like another's, and no tag is a directory of another's."""
        return f"fleet/{self.name}" if round_ == 1 else f"fleet/{self.name}@{round_}"


@dataclass(frozen=True)
class Config:
    path: Path
    base: str = DEFAULT_BASE
    branch_prefix: str = DEFAULT_PREFIX
    worktree: str = DEFAULT_WORKTREE
    warn_agents: int = DEFAULT_WARN
    max_agents: int = DEFAULT_MAX
    union: tuple[str, ...] = ()  # shared files merged line-wise, and open to every agent
    ignore_case: bool = False  # zones match paths ignoring case, at every gate and in every clone
    sync: str = "merge"  # how git fleet-sync brings the base into agent branches: merge or rebase
    agents: Mapping[str, Agent] = field(default_factory=dict)
    checkpoints: Mapping[str, Checkpoint] = field(default_factory=dict)
    model: str = "sonnet"  # fleet-wide session defaults; each agent may set its own
    command: str = "claude --name {session} --model {model}"
    resume: str = "claude --resume {session}"
    stagger: int = 5  # seconds between agents' starts in git fleet-up (API rate limits)
    layout: str = "windows"  # git fleet-up: a tmux window per agent, or "tiled" panes in one window
    setup_copy: tuple[str, ...] = ()  # ignored files copied from the main worktree into a new worktree
    setup_run: str | None = None  # run in each new worktree (npm ci, uv sync)
    ports: tuple[int, int] | None = None  # each agent gets its own port from this range
    bus_dir: str = "."  # where tasks/, results/ and master_plan.md live, relative to the main worktree
    lease: str = "30m"  # how long a claim holds without renewal
    text: str = field(default="", compare=False, repr=False)  # what it was parsed from (the zone cache's key)

    def checkpoint(self, name: str) -> Checkpoint:
        try:
            return self.checkpoints[name]
        except KeyError:
            known = ", ".join(sorted(self.checkpoints)) or "none yet"
            raise UsageError(f"no checkpoint named '{name}' in {self.path}",
                             f"checkpoints: {known}; declare one as [checkpoints.{name}] agents = [...]") from None

    def agent(self, name: str) -> Agent:
        try:
            return self.agents[name]
        except KeyError:
            known = ", ".join(sorted(self.agents)) or "none yet"
            raise UsageError(f"no agent named '{name}' in {self.path}", f"agents: {known}") from None

    def default_branch(self, name: str) -> str:
        return f"{self.branch_prefix}{name}"

    def worktree_template(self, agent: Agent) -> str:
        """Where the agent's worktree goes, before {repo} and {agent} are filled in."""
        return agent.worktree if agent.worktree is not None else self.worktree


def check_agent_name(name: str) -> None:
    if not _AGENT_NAME.match(name) or name.endswith((".lock", ".")) or ".." in name:
        raise UsageError(
            f"'{name}' is not a valid agent name",
            "use letters, digits, '.', '_' and '-', starting with a letter or digit",
        )


def _line_of(text: str, table: tuple[str, ...], key: str | None = None) -> int:
    """Best line number for a key (or a table header) in the TOML text, 1-based."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[+\s*(.+?)\s*\]+\s*(#.*)?$")
    current: tuple[str, ...] = ()
    table_line = 1
    for no, line in enumerate(lines, 1):
        m = header.match(line)
        if m:
            current = tuple(part.strip().strip("\"'") for part in m.group(1).split("."))
            if current == table:
                table_line = no
            continue
        if key is not None and current == table and re.match(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", line):
            return no
    # keys written as dotted keys or inline tables land here: point at the table, or the start
    return table_line


class _Reader:
    def __init__(self, path: Path, text: str):
        self.path = path
        self.text = text
        self.version = SCHEMA_VERSION

    def fail(self, table: tuple[str, ...], key: str | None, what: str, hint: str | None = None) -> ConfigError:
        line = _line_of(self.text, table, key)
        return ConfigError(f"{self.path}:{line}: {what}", hint or f"fix {self.path.name} and run the command again")

    def take(self, data: Mapping[str, Any], table: tuple[str, ...], key: str, kind: type, default: Any) -> Any:
        if key not in data:
            return default
        value = data[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            label = ".".join(table + (key,))
            raise self.fail(table, key, f"'{label}' must be {kind.__name__ if kind is not str else 'a string'}, not {value!r}")
        return value

    def path_template(self, table: tuple[str, ...], template: str | None) -> str | None:
        bad = None if template is None else _unknown_in_path(template)
        if template is not None and self.version < 4 and "{repo}" in template.replace("{{", ""):
            raise self.fail(table, "worktree", f"{{repo}} in {'.'.join(table)}.worktree needs `version = 4` at the top "
                            f"of {self.path.name} (it says {self.version})",
                            "set version = 4; git-fleet releases that do not know {repo} then say they are too old")
        if bad == "{":
            raise self.fail(table, "worktree", f"a lone brace in {'.'.join(table)}.worktree",
                            "write a brace as {{ or }}; placeholders: {repo}, {agent}")
        if bad is not None:
            raise self.fail(table, "worktree", f"unknown placeholder {{{bad}}} in {'.'.join(table)}.worktree",
                            "placeholders: {repo} (the main worktree's directory name), {agent}; "
                            "write a brace as {{ or }}")
        if template is not None and not template.strip():
            raise self.fail(table, "worktree", f"'{'.'.join(table)}.worktree' is empty")
        return template

    def unknown(self, data: Mapping[str, Any], table: tuple[str, ...], allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                where = ".".join(table) or "the top level"
                raise self.fail(table, key, f"unknown key '{key}' in {where}", "known keys: " + ", ".join(sorted(allowed)))
            pattern = ".".join(table[:1] + ("*",) * (len(table) - 1))
            needs = INTRODUCED.get((pattern, key), 1)
            if needs > self.version:
                label = ".".join(table + (key,))
                raise self.fail(table, key, f"'{label}' needs `version = {needs}` at the top of {self.path.name} "
                                f"(it says {self.version})",
                                f"set version = {needs}; git-fleet releases older than the one that added "
                                f"'{key}' then say they are too old, rather than misreading the file")


def parse(path: Path, text: str) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        loc = f"{m.group(1)}:{m.group(2)}" if m else "1"
        raise ConfigError(f"{path}:{loc}: {msg}", f"{path.name} must be valid TOML (https://toml.io)") from None
    r = _Reader(path, text)
    r.unknown(data, (), {"version", "fleet", "agents", "checkpoints", "bus", "setup"})
    version = r.take(data, (), "version", int, 1)
    if version > SCHEMA_VERSION:
        raise r.fail((), "version", f"written for a newer git-fleet (schema {version}; this one reads {SCHEMA_VERSION})",
                     "upgrade git-fleet")
    r.version = version
    fleet = r.take(data, (), "fleet", dict, {})
    r.unknown(fleet, ("fleet",), {"base", "branch_prefix", "worktree", "warn_agents", "max_agents", "union", "sync",
                                  "model", "command", "resume", "stagger", "layout", "ignore_case"})
    ignore_case = r.take(fleet, ("fleet",), "ignore_case", bool, False)
    stagger = r.take(fleet, ("fleet",), "stagger", int, 5)
    if stagger < 0:
        raise r.fail(("fleet",), "stagger", "'fleet.stagger' must be 0 or more seconds")
    layout = r.take(fleet, ("fleet",), "layout", str, "windows")
    if layout not in ("windows", "tiled"):
        raise r.fail(("fleet",), "layout", f"'fleet.layout' must be \"windows\" or \"tiled\", not {layout!r}")
    defaults = {"model": r.take(fleet, ("fleet",), "model", str, DEFAULT_MODEL),
                "command": r.take(fleet, ("fleet",), "command", str, DEFAULT_COMMAND),
                "resume": r.take(fleet, ("fleet",), "resume", str, DEFAULT_RESUME)}
    for key in ("command", "resume"):
        bad = unknown_placeholder(defaults[key])
        if bad:
            raise r.fail(("fleet",), key, f"unknown placeholder {{{bad}}} in fleet.{key}",
                         "placeholders: " + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS))
    base = r.take(fleet, ("fleet",), "base", str, DEFAULT_BASE)
    prefix = r.take(fleet, ("fleet",), "branch_prefix", str, DEFAULT_PREFIX)
    worktree = r.path_template(("fleet",), r.take(fleet, ("fleet",), "worktree", str, None)) or DEFAULT_WORKTREE
    warn = r.take(fleet, ("fleet",), "warn_agents", int, DEFAULT_WARN)
    limit = r.take(fleet, ("fleet",), "max_agents", int, DEFAULT_MAX)
    if not base:
        raise r.fail(("fleet",), "base", "'fleet.base' is empty", "name the base branch, e.g. base = \"main\"")
    union = r.take(fleet, ("fleet",), "union", list, [])
    if not all(isinstance(u, str) for u in union):
        raise r.fail(("fleet",), "union", "'fleet.union' must be a list of paths, e.g. [\"CHANGELOG.md\"]")
    try:
        Zone(union, ignore_case)
    except PatternError as e:
        raise r.fail(("fleet",), "union", e.message, e.hint) from None
    sync = r.take(fleet, ("fleet",), "sync", str, "merge")
    if sync not in ("merge", "rebase"):
        raise r.fail(("fleet",), "sync", f"'fleet.sync' must be \"merge\" or \"rebase\", not {sync!r}")
    agents: dict[str, Agent] = {}
    for name, spec in r.take(data, (), "agents", dict, {}).items():
        table = ("agents", name)
        if not isinstance(spec, dict):
            raise r.fail(("agents",), name, f"agent '{name}' must be a table, e.g. [agents.{name}]")
        try:
            check_agent_name(name)
        except UsageError as e:
            raise r.fail(table, None, e.message, e.hint) from None
        r.unknown(spec, table, {"zone", "branch", "worktree", "session", "model", "command", "resume", "env", "port"})
        zone = spec.get("zone", [])
        if isinstance(zone, str):
            zone = [zone]
        if not isinstance(zone, list) or not all(isinstance(p, str) for p in zone):
            raise r.fail(table, "zone", f"'agents.{name}.zone' must be a list of strings")
        if not zone:
            raise r.fail(table, "zone", f"agent '{name}' has no zone", f"add zone = [\"pattern\", ...] to [agents.{name}]")
        try:
            Zone(zone)
        except PatternError as e:
            raise r.fail(table, "zone", f"agent '{name}': {e.message}", e.hint) from None
        env = r.take(spec, table, "env", dict, {})
        if not all(isinstance(v, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k, v in env.items()):
            raise r.fail(table, "env", f"'agents.{name}.env' must map variable names to strings")
        found = {k: r.take(spec, table, k, str, None) for k in Agent.SESSION_KEYS}
        for key in ("command", "resume"):
            if found[key] is not None:
                bad = unknown_placeholder(found[key])
                if bad:
                    raise r.fail(table, key, f"agent '{name}': unknown placeholder {{{bad}}} in its {key}",
                                 "placeholders: " + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS))
        agents[name] = Agent(
            name=name,
            zone=tuple(zone),
            branch=r.take(spec, table, "branch", str, f"{prefix}{name}"),
            worktree=r.path_template(table, r.take(spec, table, "worktree", str, None)),
            env=tuple(sorted(env.items())),
            port=r.take(spec, table, "port", int, None),
            ignore_case=ignore_case,
            **found,
        )
    checkpoints: dict[str, Checkpoint] = {}
    for name, spec in r.take(data, (), "checkpoints", dict, {}).items():
        table = ("checkpoints", name)
        if not isinstance(spec, dict):
            raise r.fail(("checkpoints",), name, f"checkpoint '{name}' must be a table, e.g. [checkpoints.{name}]")
        try:
            check_agent_name(name)
        except UsageError:
            raise r.fail(table, None, f"'{name}' is not a valid checkpoint name",
                         "use letters, digits, '.', '_' and '-'") from None
        r.unknown(spec, table, {"agents", "test", "timeout"})
        members = spec.get("agents", [])
        if not isinstance(members, list) or not members or not all(isinstance(a, str) for a in members):
            raise r.fail(table, "agents", f"checkpoint '{name}' needs agents = [\"agent\", ...]")
        for member in members:
            if member not in agents:
                raise r.fail(table, "agents", f"checkpoint '{name}' names '{member}', which is not an agent",
                             "agents: " + (", ".join(sorted(agents)) or "none yet"))
        if len(set(members)) != len(members):
            raise r.fail(table, "agents", f"checkpoint '{name}' names an agent twice")
        timeout_text = r.take(spec, table, "timeout", str, None)
        timeout = DEFAULT_TEST_TIMEOUT
        if timeout_text is not None:
            m = _DURATION.fullmatch(timeout_text)
            if not m or int(m.group(1)) == 0:
                raise r.fail(table, "timeout", f"'checkpoints.{name}.timeout' must be a duration such as \"30m\", "
                             f"not {timeout_text!r}")
            timeout = parse_duration(timeout_text)
        checkpoints[name] = Checkpoint(name, tuple(members), r.take(spec, table, "test", str, None), timeout)
    setup = r.take(data, (), "setup", dict, {})
    r.unknown(setup, ("setup",), {"copy", "run", "ports"})
    copy = r.take(setup, ("setup",), "copy", list, [])
    if not all(isinstance(c, str) and c and not c.startswith("/") and ".." not in c.split("/") for c in copy):
        raise r.fail(("setup",), "copy", "'setup.copy' must list paths inside the repository, e.g. [\".env\"]")
    ports_text = r.take(setup, ("setup",), "ports", str, None)
    ports = None
    if ports_text is not None:
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", ports_text)
        if not m or not 0 < int(m.group(1)) <= int(m.group(2)) < 65536:
            raise r.fail(("setup",), "ports", f"'setup.ports' must be a range such as \"4000-4099\", not {ports_text!r}")
        ports = (int(m.group(1)), int(m.group(2)))
    bus = r.take(data, (), "bus", dict, {})
    r.unknown(bus, ("bus",), {"dir", "lease"})
    bus_dir = r.take(bus, ("bus",), "dir", str, ".")
    lease = r.take(bus, ("bus",), "lease", str, "30m")
    if not _DURATION.fullmatch(lease):
        raise r.fail(("bus",), "lease", f"'bus.lease' must be a duration such as \"30m\", not {lease!r}")
    return Config(path=path, base=base, branch_prefix=prefix, worktree=worktree, warn_agents=warn,
                  max_agents=limit, union=tuple(union), ignore_case=ignore_case, sync=sync, agents=agents, checkpoints=checkpoints,
                  bus_dir=bus_dir, lease=lease, stagger=stagger, layout=layout, setup_copy=tuple(copy),
                  setup_run=r.take(setup, ("setup",), "run", str, None), ports=ports, text=text, **defaults)


def load(path: Path) -> Config | None:
    """The config at `path`, or None when there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return parse_bytes(path, raw)


def parse_bytes(path: Path, raw: bytes) -> Config:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8") from None
    return parse(path, text)


def committed(common_dir: str | Path, base: str) -> Config | None:
    """The configuration committed on the base branch (what a server and other clones read),
    named `BASE:.gitfleet.toml` in errors; None when the base has none."""
    from .gateway.plumbing import git

    blob = git(["cat-file", "blob", f"refs/heads/{base}:{CONFIG_NAME}"], common_dir, check=False)
    return parse_bytes(Path(f"{base}:{CONFIG_NAME}"), blob.stdout) if blob.returncode == 0 else None


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
    return text


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
