"""git fleet-init: a repository set up for a fleet (its config, hooks and merge settings) or a
server's checks; undone again; and the agents an interactive init proposes from the tree, adds
as the person answered, and the checkpoint that merges them."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import agent_clis, agents, approval, check, config, config_edit, hook_install, machines, publish_start
from . import server as rules
from .errors import FleetError, UsageError
from .fleet import Fleet, Report
from .gateway import plumbing
from .gateway.repo import Repo
from .remote_bus import RemoteBus
from .remote_bus.steps import seed


def forget(fleet: Fleet) -> None:
    """Undo a fresh `git fleet-init` (no agents): its hooks, its config and its record."""
    hook_install.uninstall(fleet.repo)
    _merges_into_base(fleet.repo, fleet.config.base, on=False)
    fleet.config_path.unlink(missing_ok=True)
    (fleet.repo.common_dir / approval.RECORD).unlink(missing_ok=True)


def forget_unless_agents(fleet: Fleet) -> bool:
    """Undo a fresh `git fleet-init` if no agent was added since (forget); whether it was undone."""
    if fleet.config.agents:
        return False
    forget(fleet)
    return True


def propose_zones(fleet: Fleet, limit: int = 7) -> list[tuple[str, str, int]]:
    """Agents to start with, one per top-level directory of the base (or of the one directory
    that holds nearly everything): (name, zone pattern, tracked files), largest first."""
    base = fleet.repo.resolve(fleet.config.base) or "HEAD"
    files = list(fleet.repo.tracked_files(base))

    def parts(prefix: str) -> Counter[str]:
        return Counter(prefix + p[len(prefix):].split("/", 1)[0] for p in files
                       if p.startswith(prefix) and "/" in p[len(prefix):])

    dirs = parts("")
    while dirs:
        top, n = dirs.most_common(1)[0]
        inner = parts(top + "/")
        if n < 0.7 * len(files) or len(inner) < 2:
            break
        del dirs[top]  # src/ holds nearly everything: propose its parts instead
        dirs.update(inner)
    taken = set(fleet.config.agents)
    proposals = []
    for d, n in dirs.most_common():
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", d.rsplit("/", 1)[-1]).strip(".-").lower() or "agent"
        if name in taken or d.rsplit("/", 1)[-1].startswith("."):
            continue
        taken.add(name)
        proposals.append((name, f"{d}/**", n))
    return proposals[:limit]


@dataclass
class Answered:
    """What became of one NAME=PATTERN[,PATTERN...] of an interactive init's answer."""
    name: str  # the agent's name; for an answer not of that form, the answer as given
    patterns: str = ""  # as given, comma-separated
    worktree: Path | None = None  # the added agent's worktree
    refused: str | None = None  # why it was skipped; None: it was added


def add_answered(fleet: Fleet, answer: str) -> Iterator[Answered]:
    """Add the agents an interactive init's answer names (NAME=PATTERN[,PATTERN...] separated by
    spaces, or - for none), yielding what became of each as it is done (each makes a branch and a
    worktree, which takes a moment): added, or skipped with the reason, the rest going on."""
    for spec in answer.split() if answer.strip() != "-" else []:
        name, sep, patterns = spec.partition("=")
        if not sep or not patterns:
            yield Answered(spec, refused="write NAME=PATTERN")
            continue
        try:
            agents.add(fleet, name, patterns.split(","))
            where = fleet.worktree_of(fleet.config.agent(name))
        except FleetError as e:
            yield Answered(name, patterns, refused=e.message)
            continue
        yield Answered(name, patterns, where)


def checkpoint_answered(fleet: Fleet, answer: str, names: Sequence[str]) -> str | None:
    """Declare the checkpoint an interactive init's answer names, merging `names` in that order;
    its name, or None when the answer was - (none)."""
    name = answer.strip()
    if name == "-":
        return None
    agents.declare_checkpoint(fleet, name, names)
    return name


@dataclass
class InitResult:
    config_path: Path | None
    created: bool
    hooks: hook_install.HookReport
    report: Report


def init(*, base: str | None = None, server: bool = False, uninstall: bool = False,
         orchestrator_keys: Sequence[str] = (), agent_keys: Sequence[tuple[str, str]] = (),
         base_push: str | None = None, signed_machines: tuple[bool, Sequence[str]] = (False, ())) -> InitResult:
    """Write a commented .gitfleet.toml if there is none and install the hooks; safe to repeat."""
    repo = Repo.discover()
    report = Report()
    if (orchestrator_keys or agent_keys or base_push or any(signed_machines)) and not repo.bare:
        raise UsageError("--orchestrator-key, --agent-key, --base-push, --signed-machines and --machine-key are for a "
                         "bare repository that agents push to",
                         "run it there: git -C <server's repository> fleet-init --server ...")
    if repo.bare or server:
        done = _server(repo, base, uninstall, (orchestrator_keys, agent_keys, base_push, signed_machines), report)
        if done is not None:
            return done
    main = repo.main_worktree
    assert main is not None
    fleet = _orchestrators_fleet(repo, main, uninstall)
    if repo.is_main_worktree():
        repo.record_main_worktree()
    if uninstall:
        if fleet is not None:
            agent_clis.uninstall(fleet)
        _merges_into_base(repo, fleet.config.base if fleet is not None else None, on=False)
        (repo.common_dir / approval.RECORD).unlink(missing_ok=True)  # (no fleet to hold merges to)
        return InitResult(main / config.CONFIG_NAME, False, hook_install.uninstall(repo), report)
    path = main / config.CONFIG_NAME
    cfg = config.load(path)
    created = cfg is None
    if cfg is None:
        cfg = _new_config(repo, path, base, report)
    elif base is not None and base != cfg.base:
        report.warnings.append(f"{path.name} already names base '{cfg.base}'; edit it there to change it")
    hook_report = hook_install.install(repo)
    _merges_into_base(repo, cfg.base, on=True)
    check.compile_config(str(repo.common_dir), str(main), cfg)
    return InitResult(path, created, hook_report, report)


def _server(repo: Repo, base: str | None, uninstall: bool,
            rules_given: tuple[Sequence[str], Sequence[tuple[str, str]], str | None, tuple[bool, Sequence[str]]],
            report: Report) -> InitResult | None:
    """`git fleet-init --server` (or any init of a bare repository): the server's checks installed
    or uninstalled. None where a worktree's --server goes on as a plain init (its base recorded)."""
    names = hook_install.SERVER_HOOKS if repo.bare else hook_install.WORKTREE_HOOKS
    if uninstall:
        return InitResult(None, False, hook_install.uninstall(repo, names), report)
    if base is not None and not repo.valid_branch_name(base):
        raise UsageError(f"'{base}' is not a valid branch name")
    if repo.bare:
        orchestrator_keys, agent_keys, base_push, signed_machines = rules_given
        report.notes += rules.install(str(repo.common_dir), orchestrator_keys, agent_keys, base_push, base,
                                      signed_machines)
        where = plumbing.server_base(str(repo.common_dir))
        if repo.ref_value(f"refs/heads/{where}:{config.CONFIG_NAME}") is None:
            report.warnings.append(f"{where}:{config.CONFIG_NAME} is not here yet: until it is pushed, pushes are "
                                   "not zone-checked (each one says so)")
        return InitResult(None, False, hook_install.install(repo, names), report)
    if base is not None:
        repo.config_set("fleet.base", base)
    return None


def _orchestrators_fleet(repo: Repo, main: Path, uninstall: bool) -> Fleet | None:
    """The fleet already here (None if there is none, or, when uninstalling, if its configuration
    is broken), once it is sure that the orchestrator runs this, not an agent."""
    what = "uninstall the fleet's hooks" if uninstall else "run git fleet-init"
    try:
        fleet = Fleet.here() if (main / config.CONFIG_NAME).exists() else None
    except FleetError:
        if not uninstall:
            raise
        fleet = None  # a broken configuration does not keep the hooks in
    if fleet is not None:
        fleet.refuse_agents(what)
    elif os.environ.get("FLEET_AGENT") or not repo.is_main_worktree():
        raise FleetError(f"cannot {what} outside the main worktree or in an agent's session: only the orchestrator "
                         "changes the fleet or the base",
                         f"run it in the main worktree ({main}), outside any agent's session")
    return fleet


def _new_config(repo: Repo, path: Path, base: str | None, report: Report) -> config.Config:
    """A commented .gitfleet.toml written (and approved) at `path`, on `base`, else the branch the
    repository's HEAD names."""
    if base is None:
        head = (repo.common_dir / "HEAD").read_text().strip()
        base = head[16:] if head.startswith("ref: refs/heads/") else config.DEFAULT_BASE
    elif not repo.valid_branch_name(base):
        raise UsageError(f"'{base}' is not a valid branch name", "see `git help check-ref-format`")
    text = config_edit.new_config_text(base)
    cfg = config.parse(path, text)
    approval.write_config(repo.common_dir, path, text)
    if repo.resolve(base) is None:
        report.warnings.append(f"base branch '{base}' has no commits yet; agents can be added after the first commit")
    return cfg


def _merges_into_base(repo: Repo, base: str | None, *, on: bool) -> None:
    """A plain `git merge` into the base makes a merge commit, so that the pre-merge-commit hook
    runs and checks the agent's commits: a fast-forward runs no hook at all. `git pull` keeps
    fast-forwarding (pull.ff = true, git's own default, set only where nothing is)."""
    key = f"branch.{base}.mergeOptions"
    now = repo.config_get(key) if base is not None else None
    if on and now is None:
        repo.config_set(key, "--no-ff")
        if repo.config_get("pull.ff") is None:
            repo.config_set("pull.ff", "true")
            repo.config_set("fleet.setPullFf", "true")  # (so that uninstalling takes it out again)
    elif not on:
        if now == "--no-ff":
            repo.config_set(key, None)
        if repo.config_get("fleet.setPullFf") == "true":
            repo.config_set("pull.ff", None)
            repo.config_set("fleet.setPullFf", None)



def span(fleet: Fleet, remote: str) -> machines.Machine:
    """`git fleet-init --remote`: the fleet spans machines through `remote` (machines.py). An
    agent is held for a machine when it starts to run there (join, up, teleport pull). Refused
    while the file bus has tasks not ended: they would be left behind, unseen by the other
    machines."""
    spanning = machines.remote_of(fleet.repo)
    if spanning is None or spanning == remote and not machines.bus_fetched(fleet.repo, remote):
        # (spanning already, the remote's bus fetched: tasks/ holds copies of its tasks)
        from .bus import Bus  # (only here: the file bus, read once)

        root = Path(os.path.normpath(fleet.main / fleet.config.bus_dir))
        tasks = Bus(root).all() if (root / "tasks").is_dir() else []
        live = [t.name for t in tasks if t.status in ("open", "claimed", "invalid")]
        if live:
            raise FleetError(f"the bus in {root} has {len(live)} task(s) not ended ({', '.join(live[:5])}"
                             f"{', ...' if len(live) > 5 else ''}): a bus across machines would leave them behind",
                             "finish or cancel them first (git fleet-task list), then run this again")
    me = machines.span(fleet, remote)
    hook_install.install(fleet.repo, hook_install.ACROSS_MACHINES)  # (agents' commits published)
    publish_start.record(str(fleet.repo.common_dir))  # (and their states, from their CLIs' hooks)
    bus = fleet.bus()
    if isinstance(bus, RemoteBus):
        seed(bus, last_id(Path(os.path.normpath(fleet.main / fleet.config.bus_dir))))
    return me


def last_id(root: Path) -> int:
    """The highest task id the file bus at `root` gave out (specs, results, reserved ids)."""
    found = [0]
    for where, pattern in ((root / "tasks", r"task-(\d+)-"), (root / "results", r"task-(\d+)-"),
                           (root / "tasks" / ".state", r"id-(\d+)$")):
        try:
            names = os.listdir(where)
        except OSError:
            continue
        found += [int(m.group(1)) for n in names if (m := re.match(pattern, n))]
    return max(found)
