"""git fleet-doctor: the checklist for starting a parallel session (git fleet-prune: prune.py).

Each check says OK or what is wrong and the command that fixes it. --fix repairs only what is
safe to repair without asking: it reinstalls the hooks and prunes stale worktree records.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import agent_clis, agents, brief, hook_install, lost_journal, moves, ownership, sandbox_layout
from .errors import FleetError
from .gateway import plumbing
from .gateway.plumbing import git
from .prune import some, stale_worktrees
from .zones import Zone

if TYPE_CHECKING:
    from .fleet import Fleet


@dataclass
class Item:
    """One check: ok, a warning (worth knowing; the fleet works), or a failure (exit 1)."""
    check: str
    problems: list[tuple[str, str | None]] = field(default_factory=list)  # failures: (what is wrong, the fix)
    warnings: list[tuple[str, str | None]] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def level(self) -> str:
        return "failure" if self.problems else "warning" if self.warnings else "ok"

    def bad(self, what: str, fix: str | None = None) -> None:
        self.problems.append((what, fix))

    def warn(self, what: str, fix: str | None = None) -> None:
        self.warnings.append((what, fix))

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "level": self.level,
                "problems": [{"problem": p, "fix": f} for p, f in self.problems],
                "warnings": [{"warning": w, "fix": f} for w, f in self.warnings], "info": self.info,
                "fixed": self.fixed}


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


def diagnose(fleet: Fleet, fix: bool = False) -> list[Item]:
    return [_config(fleet), _worktrees(fleet, fix), _zones(fleet), _hooks(fleet, fix), _agent_hooks(fleet, fix),
            _sandbox(fleet), _sessions(fleet), _bus(fleet), _checkpoints(fleet), _branches(fleet), _locks(fleet)]


def _sandbox(fleet: Fleet) -> Item:
    """What this system offers the agents' sandbox, and whether each agent set to run in it can."""
    item = Item("sandbox")
    info, problems = sandbox_layout.survey(fleet)
    item.info += info
    for line, hint in problems:
        item.bad(line, hint)
    return item


def _config(fleet: Fleet) -> Item:
    item = Item("config")
    cfg = fleet.config
    base = fleet.repo.resolve(cfg.base)
    if base is None:
        item.bad(f"the base branch '{cfg.base}' has no commits", f"commit on {cfg.base}, or set base in {cfg.path.name}")
    n = len(cfg.agents)
    if n == 0:
        item.warn("no agents yet", "git fleet-add NAME --zone 'PATTERN'")
    elif n > cfg.max_agents:
        item.bad(f"{n} agents, more than max_agents ({cfg.max_agents})", "remove some: git fleet-rm NAME")
    elif n > cfg.warn_agents:
        item.info.append(f"{n} agents: beyond {cfg.warn_agents} coordination costs grow (3-7 is the sweet spot)")
    item.info.append(f"{cfg.path}: {n} agent(s), base {cfg.base}")
    return item


def _worktrees(fleet: Fleet, fix: bool) -> Item:
    item = Item("worktrees")
    stale = stale_worktrees(fleet)
    # an agent's worktree moved by hand and not yet repaired looks the same as a deleted one:
    # pruning its record would lose its index, so --fix leaves agents' records to the user
    others = stale_worktrees(fleet, agents=False)
    if others and fix:
        for s in others:
            fleet.repo.forget_worktree(Path(s.rsplit(" (", 1)[0]))
        item.fixed += [f"pruned stale worktree record {s}" for s in others]
        stale = [s for s in stale if s not in others]
    if stale:
        item.bad(f"stale worktree record(s) (their directories are gone): {some(stale)}",
                 "moved by hand? git worktree repair NEW-PLACE; deleted? git worktree prune")
    for row in agents.describe(fleet):
        name, where = row["agent"], row["worktree"]
        if row["state"] == "missing branch":
            item.bad(f"agent '{name}': its branch {row['branch']} does not exist",
                     f"git branch {row['branch']} {fleet.config.base}  (or git fleet-rm --force {name})")
        elif row["state"] == "missing worktree":
            item.bad(f"agent '{name}': no worktree at {where}", brief.missing_worktree(fleet, fleet.config.agent(name)).hint)
        elif row["state"] != "ok":
            item.bad(f"agent '{name}': its {row['state']}, not {row['branch']}",
                     f"git -C {_q(where)} switch {row['branch']}")
    _registrations(fleet, item, fix)
    return item


def _registrations(fleet: Fleet, item: Item, fix: bool) -> None:
    """This clone's records of where agents' worktrees are (git config fleet-agent.NAME.worktree):
    each of an agent, at a worktree git lists, one agent per worktree, never the main one."""
    # (a worktree moved by hand and not yet repaired is still listed, prunable: reported above)
    listed = {os.path.realpath(w.path) for w in fleet.worktrees() if not w.bare}
    seen: dict[str, str] = {}
    for name, path in sorted(fleet.repo.registered_worktrees().items()):
        real = os.path.realpath(path)
        why = ("names no agent of the fleet" if name not in fleet.config.agents
               else "is the main worktree" if real == os.path.realpath(fleet.main)
               else f"is also where '{seen[real]}' is recorded" if real in seen
               else "is no worktree git lists (moved or removed by hand)" if real not in listed else None)
        seen.setdefault(real, name)
        if why is None:
            continue
        if fix:
            fleet.register(name, None)
            item.fixed.append(f"forgot the record of '{name}' at {path}: it {why}")
        else:
            item.warn(f"the record of '{name}''s worktree, {path}, {why}",
                      f"git fleet-doctor --fix forgets it (then the agent's worktree is known by its branch); "
                      f"or git config --unset {plumbing.REGISTERED}.{name}.worktree")


def _zones(fleet: Fleet) -> Item:
    item = Item("zones")
    for a, b, example in ownership.overlaps(fleet):
        item.bad(f"the zones of '{a}' and '{b}' overlap: both own {example}",
                 f"narrow one with git fleet-set {b} --zone ... (a '!pattern' takes paths out)")
    if fleet.repo.config_get("core.ignoreCase") == "true" and not fleet.config.ignore_case:
        item.bad("this clone ignores case (core.ignoreCase), the fleet's zones do not: src/WEB/x escapes a "
                 "'!src/web/**' here",
                 f"set ignore_case = true in [fleet] of {fleet.config.path.name} (with version = 3)")
    base = fleet.repo.resolve(fleet.config.base)
    if base is None or not fleet.config.agents:
        return item
    zones = [a.compiled_zone() for a in fleet.config.agents.values()] + [Zone(list(fleet.config.union), fleet.config.ignore_case)]
    protected = {".gitfleet.toml"}
    unowned = [p for p in fleet.repo.tracked_files(base)
               if p not in protected and not any(z.owns(p) for z in zones)]
    if unowned:
        item.info.append(f"{len(unowned)} tracked file(s) belong to no agent, so to the orchestrator: {some(unowned)}")
    return item


def _hook_python(text: str) -> str | None:
    """The Python a fleet hook runs (the `python=` line of the shim)."""
    for line in text.splitlines():
        if line.startswith("python="):
            value = shlex.split(line[len("python="):])
            return value[0] if value else None
    return None


def _hooks(fleet: Fleet, fix: bool) -> Item:
    item = Item("hooks")
    directory, writable = hook_install.hooks_dir(fleet.repo)
    missing, broken = [], []
    pythons: dict[str, bool] = {}
    for name in hook_install.WORKTREE_HOOKS:
        target = directory / name
        try:
            text = target.read_text(encoding="utf-8")
        except OSError:
            text = ""
        if not writable:
            if "git-fleet-check" not in text:
                missing.append(name)
            continue
        if not hook_install.is_ours(target):
            missing.append(name)
            continue
        python = _hook_python(text)
        if python and python not in pythons:
            pythons[python] = git_fleet_runs(python)
        if python is None or text != hook_install.render(name, python) or not pythons[python]:
            broken.append(name)
        if (directory / (name + hook_install.CHAINED)).exists():
            item.info.append(f"{name} runs your own hook first ({name}{hook_install.CHAINED})")
    if (missing or broken) and fix and writable:
        hook_install.install(fleet.repo)
        item.fixed.append(f"reinstalled the hooks in {directory}")
    elif missing:
        item.bad(f"hook(s) not installed in {directory}: {', '.join(missing)}",
                 "git fleet-init" if writable else "; ".join(hook_install.manual_lines(directory, tuple(missing))[:1]))
    elif broken:
        item.bad(f"hook(s) in {directory} from another git-fleet, or whose Python is gone: {', '.join(broken)}",
                 "git fleet-init")
    return item


def _agent_hooks(fleet: Fleet, fix: bool) -> Item:
    """The agent CLIs' hooks in each worktree (the zone check at the edit, the agents' states),
    Claude Code's trust of the repository, and CLIs that commit past the commit hook."""
    item = Item("agent hooks")
    agents_ = list(fleet.config.agents.values())
    for agent in agents_:
        found = agent_clis.problems(fleet, agent)
        if found and fix:
            try:
                agent_clis.install(fleet, agent)
                item.fixed.append(f"reinstalled the agent CLIs' hooks of '{agent.name}'")
            except FleetError as e:  # (a settings file that is not JSON: the person's to mend)
                item.bad(e.message, e.hint)
            found = [p for p in agent_clis.problems(fleet, agent) if "disableAllHooks" in p or "JSON" in p]
        for problem in found:
            item.bad(problem, "remove disableAllHooks from it" if "disableAllHooks" in problem
                     else "mend or remove the file, then: git fleet-doctor --fix" if "JSON" in problem
                     else "git fleet-doctor --fix")
        command = agent_clis.command_of(fleet, agent)
        if agent_clis.cli_of(command) == "aider" and "--git-commit-verify" not in command:
            item.warn(f"agent '{agent.name}' runs aider, which commits with --no-verify unless told otherwise: "
                      "its commits skip the zone check until the merge",
                      f"git fleet-set {agent.name} --command '{command} --git-commit-verify'")
    for line in agent_clis.untrusted(fleet, agents_):
        item.warn(line, "git fleet-up --trust (man git-fleet-agents)")
    return item


def git_fleet_runs(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import git_fleet.hook"], capture_output=True).returncode == 0
    except OSError:
        return False


def _sessions(fleet: Fleet) -> Item:
    item = Item("sessions")
    seen: dict[str, str] = {}
    programs: dict[str, list[str]] = {}
    for agent in fleet.config.agents.values():
        values = brief.values(fleet, agent)
        session = values["session"]
        if session in seen:
            item.bad(f"agents '{seen[session]}' and '{agent.name}' share the session name '{session}'",
                     f"git fleet-set {agent.name} --session {agent.name}")
        seen[session] = agent.name
        command = agent.command or fleet.config.command
        try:
            program = shlex.split(command)[0] if command.strip() else ""
        except ValueError:
            program = ""
        if not program:
            item.bad(f"agent '{agent.name}' has no command to start", f"git fleet-set {agent.name} --command TEMPLATE")
        elif "{" not in program and shutil.which(program) is None and not os.path.isfile(
                fleet.worktree_of(agent) / program):
            programs.setdefault(program, []).append(agent.name)
    for program, names in programs.items():
        item.warn(f"'{program}' (the command of {', '.join(names)}) is not on PATH: git fleet-up cannot start them",
                 f"install it, or git fleet-set {names[0]} --command TEMPLATE (presets: git help fleet-set)")
    if shutil.which("tmux") is None:
        item.warn("tmux is not installed (git fleet-up needs it)", "apt-get install tmux (or use git fleet-run)")
    return item


def _bus(fleet: Fleet) -> Item:
    item = Item("bus")
    bus = fleet.bus()
    root: Path = bus.root
    probe = root if root.exists() else root.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        item.bad(f"the bus directory {root} cannot be written", f"check [bus] dir in {fleet.config.path.name}")
        return item
    tasks = bus.all()
    lapsed = [t for t in tasks if t.status == "open" and t.attempt and t.claimed_by]
    for t in lapsed:  # (renew needs a live lease: the holder claims anew, like any worker)
        item.bad(f"{t.name}: the lease of '{t.claimed_by}' has lapsed (attempt {t.attempt})",
                 f"the next git fleet-task claim takes it over (a result from '{t.claimed_by}' is refused now, "
                 f"and kept aside); or git fleet-task cancel {t.id} if it is not to be done")
    now = time.time()
    for t in tasks:
        if t.status != "invalid":
            continue
        if t.claimed_by and t.expires is not None and t.expires > now:
            item.bad(t.error or f"{t.name} cannot be read",
                     f"fix {t.path}: '{t.claimed_by}' holds {t.name} and goes on with it; do not delete the spec "
                     f"(its done would fail: no task {t.id}, and its result would only be kept aside)")
        else:
            item.bad(t.error or f"{t.name} cannot be read",
                     f"fix {t.path}; or end it with git fleet-task cancel {t.id} (rm {t.id} if it was added by mistake)")
    state = {t.id: t.status for t in tasks}
    for t in tasks:
        stuck = [d for d in t.depends if state.get(d) in (None, "failed", "cancelled")]
        if t.result is None and stuck:
            item.warn(f"{t.name} waits for {bus.after(t, tasks)}: it can never be claimed",
                      f"take {', '.join(str(d) for d in stuck)} out of the depends: line of {t.path}, or end it "
                      f"with git fleet-task cancel {t.id}")
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.status] = counts.get(t.status, 0) + 1
    item.info.append(f"{root}: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no tasks yet"))
    return item


def _checkpoints(fleet: Fleet) -> Item:
    item = Item("checkpoints")
    cps = fleet.config.checkpoints
    if not cps:
        item.warn("no checkpoints declared: agents' work is merged at declared checkpoints",
                 f"add to {fleet.config.path.name}: [checkpoints.phase-1] agents = [...]")
    for cp in cps.values():
        unknown = [a for a in cp.agents if a not in fleet.config.agents]
        if unknown:
            item.bad(f"checkpoint '{cp.name}' names unknown agent(s): {', '.join(unknown)}",
                     f"edit [checkpoints.{cp.name}] in {fleet.config.path.name}")
    if cps:
        item.info.append(", ".join(f"{cp.name} ({' '.join(cp.agents)})" for cp in cps.values()))
    return item


def _branches(fleet: Fleet) -> Item:
    item = Item("branches")
    prefix = fleet.config.branch_prefix
    owned = {a.branch for a in fleet.config.agents.values()}
    raw = git(["for-each-ref", "--format=%(refname:strip=2)", f"refs/heads/{prefix}"], fleet.repo.common_dir).stdout
    orphans = [b for b in raw.decode("utf-8", "surrogateescape").splitlines() if b and b not in owned]
    for b in orphans:
        unmerged = fleet.repo.count_unmerged(b, fleet.config.base)
        item.bad(f"branch {b} belongs to no agent" + (f" ({unmerged} unmerged commit(s))" if unmerged else " (merged)"),
                 f"git branch -d {b}" if not unmerged else f"adopt it: git fleet-add NAME --branch {b} --zone ...")
    return item


def lock_files(common_dir: Path) -> list[Path]:
    """git's lock files (refs, HEAD, the index of any worktree, config, packed-refs) under the
    common dir; the object store is not searched."""
    found = []
    for root, dirs, files in os.walk(common_dir):
        if root == str(common_dir):
            dirs[:] = [d for d in dirs if d != "objects"]
        found += [Path(root) / f for f in files if f.endswith(".lock")]
    return sorted(found)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)} s"
    return f"{int(seconds // 60)} min" if seconds < 7200 else f"{int(seconds // 3600)} h"


def _locks(fleet: Fleet) -> Item:
    """Lock files git left behind (a git process killed while it held them) make the next git
    command that needs them fail; an unfinished checkpoint merge stops commits on the base."""
    item = Item("locks")
    now = time.time()
    for lock_file in lock_files(fleet.repo.common_dir):
        try:
            age = now - lock_file.stat().st_mtime
        except FileNotFoundError:
            continue
        item.bad(f"{lock_file} exists ({_age(age)} old): a git process holds it, or one was killed holding it",
                 f"if no git process is running in this repository: rm {_q(lock_file)}")
    lost = lost_journal.unreadable(fleet.repo)
    if lost is not None:
        item.bad(f"{lost_journal.headline(*lost)}: merge, sync and checkpoint refuse until it is dealt with",
                 lost_journal.hint(fleet.config.base))
        item.info += lost_journal.move_state(fleet.repo, fleet.config.base)
    elif moves.pending(fleet.repo) is not None:
        item.bad("a checkpoint merge or sync was interrupted and is not finished",
                 f"run any git fleet command in the main worktree ({fleet.main}), e.g. git fleet-status")
    return item


def discard_moves_journal(fleet: Fleet) -> Path:
    """Set aside the unreadable journal of an interrupted move (moves.discard_unreadable), under the
    fleet's lock and from the main worktree, where moves are finished."""
    if not fleet.repo.is_main_worktree():
        raise FleetError("the journal of a move is dealt with in the main worktree", f"cd {fleet.main}")
    with fleet.editing():
        return lost_journal.discard(fleet.repo)
