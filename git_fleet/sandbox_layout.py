"""Where a sandboxed agent's work lives, so that what it may write is a boundary: its worktree;
its git dir in the repository (index, HEAD) but the files that say where things are; the ref
directory of its branch, which holds no other agent's ref; an object store of its own (the
repository's read as an alternate; gateway/stores.py brings its objects in, each checked); its
entries on the bus; its CLI's state; a temporary directory. Checked, made, and turned into the
sandbox's command line (sandbox.py)."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import agent_clis, agent_home, agent_state, sandbox
from .errors import FleetError
from .gateway import stores

if TYPE_CHECKING:
    from .config import Agent
    from .fleet import Fleet

BRANCH_LEAF = "work"  # a sandboxed agent's branch: <branch_prefix><agent>/work, in a ref directory of its own
# what the agent's git dir says about where things are, which its git must not rewrite
PROTECTED = ("gitdir", "commondir", "config.worktree")
# git's housekeeping would write outside the agent's own places (packed-refs, the shared store)
QUIET_GIT = (("gc.auto", "0"), ("maintenance.auto", "false"), ("core.fsmonitor", "false"),
             ("core.logAllRefUpdates", "false"))  # (no new reflog: the reflogs' directory is not its to write)


@dataclass(frozen=True)
class Confinement:
    """What one sandboxed run of an agent may write, and the environment it runs with."""
    write: list[str]
    links: list[str] = field(default_factory=list)
    protect: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    keep: list[str] = field(default_factory=list)  # to see in /tmp and the like, which are its own else

    def command(self, argv: list[str]) -> list[str]:
        return sandbox.command(argv, self.write, self.ports, {**os.environ, **self.env}, self.protect, self.links,
                               self.keep)

    def shell(self, command: str) -> str:
        """A shell command line (tmux's) that runs `command` by sh in the sandbox."""
        return shlex.join(self.command(["/bin/sh", "-c", command]))


def wanted(fleet: Fleet, agent: Agent, flag: bool | None = None) -> bool:
    """Whether the agent runs sandboxed: a flag beats its key, which beats the fleet's."""
    return flag if flag is not None else agent.sandbox if agent.sandbox is not None else fleet.config.sandbox


def sandboxed_branch(fleet: Fleet, agent: Agent) -> str:
    return f"{fleet.config.branch_prefix}{agent.name}/{BRANCH_LEAF}"


def problem(fleet: Fleet, agent: Agent) -> str | None:
    """Why the agent cannot be sandboxed here (the system, or the layout), in one line; None if it can."""
    missing = sandbox.support().missing()
    if missing:
        return f"this system lacks what the sandbox needs: {missing}"
    if (fleet.repo.config_get("extensions.refStorage") or "files") != "files":
        return ("this repository keeps its refs in a reftable, one file for every branch: a sandboxed agent "
                "could not write its own branch without writing every other's")
    return branch_problem(fleet, agent)


def branch_problem(fleet: Fleet, agent: Agent) -> str | None:
    """Why the agent's branch's ref directory is not its own; None when it is: named after the
    agent (so that no branch made later for another agent lands in it), and holding no other
    agent's branch nor the base."""
    folder = os.path.dirname(agent.branch)
    if os.path.basename(folder) != agent.name:
        where = f"refs/heads/{folder}/" if folder else "refs/heads/"
        return f"its branch {agent.branch} is in {where}, a ref directory that is not its own"
    others = sorted(b for b in (fleet.config.base, *(a.branch for a in fleet.config.agents.values() if a.name != agent.name))
                    if b.startswith(folder + "/"))
    if others:
        return f"its branch {agent.branch} shares the ref directory refs/heads/{folder}/ with {', '.join(others)}"
    return None


def claimed_by(fleet: Fleet, branch: str, name: str) -> str | None:
    """The sandboxed agent (other than `name`) whose ref directory `branch` would be in, if any."""
    for other in fleet.config.agents.values():
        if other.name != name and wanted(fleet, other) and branch.startswith(os.path.dirname(other.branch) + "/"):
            return other.name
    return None


def refuse(fleet: Fleet, agent: Agent) -> None:
    why = problem(fleet, agent)
    if why is None:
        return
    hint = "git fleet-doctor says what this system supports; run without --sandbox, or where it is supported"
    if why.startswith("its branch"):
        hint = (f"git fleet-set {agent.name} --sandbox on moves it to {sandboxed_branch(fleet, agent)}, "
                "a ref directory of its own")
    raise FleetError(f"agent '{agent.name}' cannot run sandboxed: {why}", hint)


def survey(fleet: Fleet) -> tuple[list[str], list[tuple[str, str]]]:
    """For git fleet-doctor: what this system offers, which agents run sandboxed; and each agent
    set to run sandboxed that cannot (line, hint)."""
    found = sandbox.support()
    missing = found.missing()
    info = [f"the kernel lacks what a sandbox needs: {missing}" if missing else
            f"the kernel can confine an agent: Landlock ABI {found.landlock_abi}, unprivileged user namespaces"]
    problems = []
    confined = [a for a in fleet.config.agents.values() if wanted(fleet, a)]
    for agent in confined:
        why = problem(fleet, agent)
        if why is not None:
            problems.append((f"agent '{agent.name}' is set to run sandboxed, and cannot: {why}",
                             f"git fleet-set {agent.name} --sandbox on (it moves a shared branch), or --sandbox off"))
    if confined:
        info.append("sandboxed: " + ", ".join(a.name for a in confined))
    return info, problems


def store(fleet: Fleet, agent: str) -> Path:
    """The agent's own object store."""
    return Path(agent_state.directory(str(fleet.repo.common_dir), agent)) / "objects"


def confine(fleet: Fleet, agent: Agent, worktree: Path, more_write: list[str] | None = None) -> Confinement:
    """Make the agent's places and say what its sandbox may write; FleetError if it cannot hold."""
    refuse(fleet, agent)
    common = fleet.repo.common_dir
    admin = fleet.repo.admin_dir(worktree)
    if admin is None:
        raise FleetError(f"agent '{agent.name}': {worktree} is not a linked worktree of this repository",
                         "a sandboxed agent works in a worktree git fleet-add made")
    own = Path(agent_state.directory(str(common), agent.name))
    places = {"objects": store(fleet, agent.name), "tmp": own / "tmp", "scratch": own / "scratch"}
    refs = common / "refs" / "heads" / os.path.dirname(agent.branch)
    for d in (*places.values(), refs):
        d.mkdir(parents=True, exist_ok=True)
    log = own_reflog(common, agent.branch)
    head_log = own_head_log(admin)
    (admin / "config.worktree").touch()  # (protected even where the repository does not read it yet)
    marks = common / "fleet" / "sandboxed"
    marks.mkdir(parents=True, exist_ok=True)
    (marks / admin.name).touch()  # (gateway: Environments.confined)
    fleet.refresh_cache(fleet.config)  # the commit hook's fast path: it cannot write the cache inside
    env = {"GIT_OBJECT_DIRECTORY": str(places["objects"]), "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(common / "objects"),
           "TMPDIR": str(places["tmp"]), "FLEET_SCRATCH": str(places["scratch"]), "FLEET_SANDBOX": "1"}
    count = int(os.environ.get("GIT_CONFIG_COUNT", "0") or 0)
    for i, (key, value) in enumerate(QUIET_GIT, count):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    env["GIT_CONFIG_COUNT"] = str(count + len(QUIET_GIT))
    home = agent_home.prepare(own, agent_clis.cli_of(agent_clis.command_of(fleet, agent)), worktree, fleet.main,
                              Path.home(), os.environ)
    env.update(home.env)
    extra = [os.path.expanduser(w) for w in (*fleet.config.sandbox_write, *agent.sandbox_write, *(more_write or []))]
    bus_write, bus_links = fleet.bus().agent_writes(agent.name)
    # (what Landlock does not mediate, chmod, touch, extended attributes, it could do to the files
    # of the bus's shared directories, which it must write symlinks in: those files are bound read-only)
    shared = [e.path for d in bus_links for e in os.scandir(d) if e.is_file(follow_symlinks=False)
              and not e.name.startswith("id-")]
    return Confinement(write=[str(worktree), str(admin), str(refs), str(log), str(head_log), str(own),
                              *map(str, bus_write), *map(str, home.write), *extra],
                       links=[str(d) for d in bus_links],
                       protect=[*(str(admin / f) for f in PROTECTED if (admin / f).exists()), str(admin / "logs"),
                                *shared],
                       ports=list(fleet.config.sandbox_ports), env=env,
                       keep=[str(common), str(fleet.main), *(str(w.path) for w in fleet.worktrees())])


def own_reflog(common: Path, branch: str) -> Path:
    """The reflog of the agent's branch, a regular file (made if missing, in place of anything
    else there): the one file of the reflogs' directories its sandbox may write, by appending.
    The directory stays the fleet's: a symlink there would have the fleet's next move of the
    branch append to whatever it names."""
    return own_file(common / "logs" / "refs" / "heads" / branch)


def own_file(log: Path) -> Path:
    """`log` a regular file, made if missing, in place of anything else there (a link, a FIFO)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.is_dir() and not log.is_symlink():
        shutil.rmtree(log)
    elif log.is_symlink() or log.exists() and not log.is_file():
        log.unlink()
    os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
    return log


def own_head_log(admin: Path) -> Path:
    """The reflog of its worktree's HEAD, a regular file in a real `logs` directory of its git
    dir, which its sandbox then sees read-only but for that file: git commands the fleet runs
    there (a teleport's reset) append to it, and must not through a link."""
    logs = admin / "logs"
    if logs.is_symlink() or logs.exists() and not logs.is_dir():
        logs.unlink()
    return own_file(logs / "HEAD")


def ever_sandboxed(fleet: Fleet, agent: Agent) -> bool:
    """Whether the agent runs sandboxed, or ran so once (a flag, not its key): its code is then
    never run outside one (its checkpoint test, its setup)."""
    return wanted(fleet, agent) or store(fleet, agent.name).is_dir()


def check_branch(fleet: Fleet, agent: Agent) -> list[str]:
    """The ref directory of an agent that ran sandboxed is its own to fill: a ref made a symbolic
    ref or a link (git would follow it when the fleet moves or deletes the branch), or anything
    that is neither a file nor a directory (a FIFO would keep every git that lists refs waiting),
    is removed before any git reads refs, and said."""
    said = []
    top = fleet.repo.common_dir / "refs" / "heads" / os.path.dirname(agent.branch)
    for where, dirs, files in os.walk(top):  # (os.walk follows no link to a directory: listed as a file here)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(where, d))]:
            path = os.path.join(where, name)
            try:
                kind = os.lstat(path).st_mode
                if stat.S_ISREG(kind):
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                    try:
                        if not os.read(fd, 5).startswith(b"ref:"):
                            continue
                    finally:
                        os.close(fd)
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            ref = os.path.relpath(path, fleet.repo.common_dir / "refs" / "heads")
            said.append(f"agent '{agent.name}': refs/heads/{ref} "
                        "was a symbolic ref, a link or no file at all, which the fleet does not follow: removed "
                        "(its work is in its worktree's HEAD reflog)")
    return said


def bring_in(fleet: Fleet) -> list[str]:
    """Every agent's own objects brought into the repository's store, each checked: what a
    fleet command does on opening, before it reads agents' branches (never inside a sandbox,
    where the store is read-only and the agent's own is read as its git reads it). What could
    not be brought in is said, one line per agent; its branch then reads as broken."""
    said = []
    for name, agent in fleet.config.agents.items():
        where = store(fleet, name)
        if not where.is_dir():
            continue  # (it never ran sandboxed: nothing of it to check or bring in)
        said += check_branch(fleet, agent)
        tree = fleet.locate(agent)
        admin = fleet.repo.admin_dir(tree) if tree is not None else None
        if admin is not None and admin.is_dir():
            own_head_log(admin)  # (what it may have left there when it ran before, say)
        try:
            forged = stores.bring_in(fleet.repo.common_dir, where)  # (a few listings when there is nothing new)
            if forged:
                said.append(f"agent '{name}': its object store held {len(forged)} file(s) whose content "
                            f"is not the object named ({forged[0]}...): forged or damaged, dropped, never used")
        except FleetError as e:
            said.append(f"agent '{name}': {e.message} (its sandbox wrote an object git would not "
                        "have written; its branch cannot be read until it is gone)")
    return said
