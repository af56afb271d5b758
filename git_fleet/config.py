""".gitfleet.toml read and validated into frozen dataclasses; every error names the file and line.
(Edited without losing comments: config_edit.py.)"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_reader import SCHEMA_VERSION, Reader, read_toml
from .errors import ConfigError, UsageError
from .gateway.plumbing import git
from .templates import PLACEHOLDERS, unknown_placeholder
from .zones import PatternError, Zone

CONFIG_NAME = ".gitfleet.toml"
DEFAULT_TEST_TIMEOUT = 30 * 60

DEFAULT_BASE = "main"
DEFAULT_PREFIX = "fleet/"
DEFAULT_WORKTREE = "../{repo}-{agent}"
DEFAULT_WARN = 7
DEFAULT_MAX = 10

DEFAULT_MODEL = "sonnet"
DEFAULT_COMMAND = "claude --session-id {session_id} --name {session} --model {model}"
DEFAULT_RESUME = "claude --resume {session_id}"
LEGACY_RESUME = "claude --resume {session}"  # what git fleet-init wrote before {session_id}: a picker


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


_AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

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
    sandbox: bool | None = None  # None: the fleet's [fleet] sandbox
    sandbox_write: tuple[str, ...] = ()  # more it may write in the sandbox, beyond the fleet's list

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
    command: str = DEFAULT_COMMAND
    resume: str = DEFAULT_RESUME
    stagger: int = 5  # seconds between agents' starts in git fleet-up (API rate limits)
    layout: str = "windows"  # git fleet-up: a tmux window per agent, or "tiled" panes in one window
    setup_copy: tuple[str, ...] = ()  # ignored files copied from the main worktree into a new worktree
    setup_run: str | None = None  # run in each new worktree (npm ci, uv sync)
    ports: tuple[int, int] | None = None  # each agent gets its own port from this range
    bus_dir: str = "."  # where tasks/, results/ and master_plan.md live, relative to the main worktree
    lease: str = "30m"  # how long a claim holds without renewal
    sandbox: bool = False  # agents' sessions and runs confined by the kernel (sandbox.py)
    sandbox_write: tuple[str, ...] = ()  # more every sandboxed agent may write ("~/" is the home directory)
    sandbox_ports: tuple[int, ...] = (443,)  # the TCP ports a sandboxed agent may connect to
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
        """<branch_prefix>NAME; where agents run sandboxed, <branch_prefix>NAME/work: a ref
        directory of its own (sandbox_layout.py)."""
        return f"{self.branch_prefix}{name}/work" if self.sandbox else f"{self.branch_prefix}{name}"

    def worktree_template(self, agent: Agent) -> str:
        """Where the agent's worktree goes, before {repo} and {agent} are filled in."""
        return agent.worktree if agent.worktree is not None else self.worktree


def check_agent_name(name: str) -> None:
    if not _AGENT_NAME.match(name) or name.endswith((".lock", ".")) or ".." in name:
        raise UsageError(
            f"'{name}' is not a valid agent name",
            "use letters, digits, '.', '_' and '-', starting with a letter or digit",
        )


def parse(path: Path, text: str) -> Config:
    data = read_toml(path, text)
    r = Reader(path, text)
    r.unknown(data, (), {"version", "fleet", "agents", "checkpoints", "bus", "setup"})
    version = r.take(data, (), "version", int, 1)
    if version > SCHEMA_VERSION:
        raise r.fail((), "version", f"written for a newer git-fleet (schema {version}; this one reads {SCHEMA_VERSION})",
                     "upgrade git-fleet")
    r.version = version
    fleet = _fleet_table(r, r.take(data, (), "fleet", dict, {}))
    agents = {name: _agent(r, name, spec, fleet["branch_prefix"], fleet["ignore_case"])
              for name, spec in r.take(data, (), "agents", dict, {}).items()}
    checkpoints = {name: _checkpoint(r, name, spec, agents)
                   for name, spec in r.take(data, (), "checkpoints", dict, {}).items()}
    return Config(path=path, agents=agents, checkpoints=checkpoints, text=text, **fleet, **_setup_and_bus(r, data))


def _fleet_table(r: Reader, fleet: dict[str, Any]) -> dict[str, Any]:
    """[fleet], as Config's keyword arguments."""
    r.unknown(fleet, ("fleet",), {"base", "branch_prefix", "worktree", "warn_agents", "max_agents", "union", "sync",
                                  "model", "command", "resume", "stagger", "layout", "ignore_case", *SANDBOX_KEYS})
    ignore_case = r.take(fleet, ("fleet",), "ignore_case", bool, False)
    stagger = r.take(fleet, ("fleet",), "stagger", int, 5)
    if stagger < 0:
        raise r.fail(("fleet",), "stagger", "'fleet.stagger' must be 0 or more seconds")
    layout = r.take(fleet, ("fleet",), "layout", str, "windows")
    if layout not in ("windows", "tiled"):
        raise r.fail(("fleet",), "layout", f"'fleet.layout' must be \"windows\" or \"tiled\", not {layout!r}")
    defaults = {"model": r.take(fleet, ("fleet",), "model", str, DEFAULT_MODEL),
                "command": r.take(fleet, ("fleet",), "command", str, DEFAULT_COMMAND),
                "resume": r.take(fleet, ("fleet",), "resume", str, DEFAULT_RESUME).replace(LEGACY_RESUME, DEFAULT_RESUME)}
    for key in ("command", "resume"):
        bad = unknown_placeholder(defaults[key])
        if bad:
            raise r.fail(("fleet",), key, f"unknown placeholder {{{bad}}} in fleet.{key}",
                         "placeholders: " + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS))
    base = r.take(fleet, ("fleet",), "base", str, DEFAULT_BASE)
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
    return {"base": base, "branch_prefix": r.take(fleet, ("fleet",), "branch_prefix", str, DEFAULT_PREFIX),
            "worktree": r.path_template(("fleet",), r.take(fleet, ("fleet",), "worktree", str, None)) or DEFAULT_WORKTREE,
            "warn_agents": r.take(fleet, ("fleet",), "warn_agents", int, DEFAULT_WARN),
            "max_agents": r.take(fleet, ("fleet",), "max_agents", int, DEFAULT_MAX), "union": tuple(union),
            "ignore_case": ignore_case, "sync": sync, "stagger": stagger, "layout": layout, **defaults,
            **_sandbox(r, fleet, ("fleet",))}


def _agent(r: Reader, name: str, spec: Any, prefix: str, ignore_case: bool) -> Agent:
    """One [agents.NAME] table."""
    table = ("agents", name)
    if not isinstance(spec, dict):
        raise r.fail(("agents",), name, f"agent '{name}' must be a table, e.g. [agents.{name}]")
    try:
        check_agent_name(name)
    except UsageError as e:
        raise r.fail(table, None, e.message, e.hint) from None
    r.unknown(spec, table, {"zone", "branch", "worktree", "session", "model", "command", "resume", "env", "port",
                            "sandbox", "sandbox_write"})
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
    return Agent(name=name, zone=tuple(zone), branch=r.take(spec, table, "branch", str, f"{prefix}{name}"),
                 worktree=r.path_template(table, r.take(spec, table, "worktree", str, None)),
                 env=tuple(sorted(env.items())), port=r.take(spec, table, "port", int, None), ignore_case=ignore_case,
                 sandbox=r.take(spec, table, "sandbox", bool, None),
                 sandbox_write=_sandbox(r, spec, table)["sandbox_write"], **found)


SANDBOX_KEYS = ("sandbox", "sandbox_write", "sandbox_ports")


def _sandbox(r: Reader, table_data: dict[str, Any], table: tuple[str, ...]) -> dict[str, Any]:
    """The sandbox keys of [fleet] (or of an agent's table, which has no ports of its own)."""
    label = ".".join(table)
    write = r.take(table_data, table, "sandbox_write", list, [])
    if not all(isinstance(w, str) and w.startswith(("/", "~/")) for w in write):
        raise r.fail(table, "sandbox_write", f"'{label}.sandbox_write' must list absolute paths or ones in the home "
                     "directory, e.g. [\"~/.cache/pip\", \"/srv/data\"]")
    ports = r.take(table_data, table, "sandbox_ports", list, [443])
    if not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports):
        raise r.fail(table, "sandbox_ports", f"'{label}.sandbox_ports' must list TCP port numbers, e.g. [443]")
    return {"sandbox": r.take(table_data, table, "sandbox", bool, False), "sandbox_write": tuple(write),
            "sandbox_ports": tuple(ports)}


def _checkpoint(r: Reader, name: str, spec: Any, agents: Mapping[str, Agent]) -> Checkpoint:
    """One [checkpoints.NAME] table."""
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
    return Checkpoint(name, tuple(members), r.take(spec, table, "test", str, None), timeout)


def _setup_and_bus(r: Reader, data: dict[str, Any]) -> dict[str, Any]:
    """[setup] and [bus], as Config's keyword arguments."""
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
    lease = r.take(bus, ("bus",), "lease", str, "30m")
    if not _DURATION.fullmatch(lease):
        raise r.fail(("bus",), "lease", f"'bus.lease' must be a duration such as \"30m\", not {lease!r}")
    return {"setup_copy": tuple(copy), "setup_run": r.take(setup, ("setup",), "run", str, None), "ports": ports,
            "bus_dir": r.take(bus, ("bus",), "dir", str, "."), "lease": lease}


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
    blob = git(["cat-file", "blob", f"refs/heads/{base}:{CONFIG_NAME}"], common_dir, check=False)
    return parse_bytes(Path(f"{base}:{CONFIG_NAME}"), blob.stdout) if blob.returncode == 0 else None
