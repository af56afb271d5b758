"""Fleet: the fleet's identity, which the other domain modules take: the config (read, approved,
saved under the fleet's lock), the repository, where each agent's worktree is, and which agent a
command runs as. Adding and removing agents, their brief, merging, status, the bus's tasks,
sessions and teleport each have a module of their own."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import approval, check, config, interrupted_add, lock, lost_journal, machines, moves, ownership, sandbox_layout, templates
from .config import Agent, Config
from .errors import FleetError, UsageError
from .gateway.repo import Repo, Worktree
from .pause import pause

if TYPE_CHECKING:
    from .bus import Bus
    from .remote_bus import RemoteBus


@dataclass
class Report:
    """What a command did, for the CLI to print: warnings always, notes with --verbose."""

    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# what an agent may run (anything else that changes the fleet or the base is refused in its
# worktree and its session: Fleet.refuse_agents)
AGENT_MAY_RUN = ("git fleet-status, -list, -who, -zones, -checkpoint, -ps, -attach, -task, -plan, -check, "
                 "-doctor (without --fix), -merge -n, -prune -n and -teleport of itself")


class Fleet:
    def __init__(self, repo: Repo, main: Path, cfg: Config, text: str):
        self.repo = repo
        self.main = main
        self.config = cfg
        self.text = text
        self.recovered: list[str] = []  # what an interrupted merge or add needed, done on opening
        self.told: set[str] = set()  # every line of those said so far (tell)
        self.waiting: Callable[[str], None] | None = None  # told who holds the lock, if it must wait
        self.warn: Callable[[str], None] | None = None  # told what was finished for a killed command later on
        # asks the person (what, question) -> yes; None where there is no one to ask (no terminal)
        self.confirm: Callable[[str, str], bool] | None = None
        self._approved: str | None = None  # the config text found approved in this command
        self.adopted: str | None = None  # the agent a killed `git fleet-add` made and this command registered
        self._trees: list[Worktree] | None = None
        self._registered: dict[str, Path] | None = None

    @property
    def config_path(self) -> Path:
        return self.main / config.CONFIG_NAME

    @classmethod
    def here(cls, cwd: str | os.PathLike[str] | None = None) -> Fleet:
        repo = Repo.discover(cwd)
        main = repo.main_worktree
        if main is None:
            raise UsageError("this is a bare repository; agents need the orchestrator's main worktree",
                             "on a server, `git fleet-init --server` installs the push checks")
        path = main / config.CONFIG_NAME
        cfg = config.load(path)
        if cfg is None:
            raise FleetError(f"no fleet here: {path} does not exist", "run `git fleet-init` in the main worktree first")
        fleet = cls(repo, main, cfg, path.read_text(encoding="utf-8"))
        orchestrator = repo.is_main_worktree()
        if orchestrator:
            repo.record_main_worktree()
        fleet.recovered = moves.recover(repo, orchestrator=orchestrator)
        if not os.environ.get("FLEET_SANDBOX"):  # (inside, the repository's store is read-only)
            fleet.recovered += sandbox_layout.bring_in(fleet)
        fleet.told.update(fleet.recovered)
        if orchestrator and interrupted_add.intent_path(fleet).exists():
            # as for merges: only the orchestrator, and only when no fleet command holds the lock
            # (one that does may be the add itself, still running)
            with lock.attempt(repo.common_dir) as held:
                if held:
                    fleet._reread()
                    fleet.recovered += interrupted_add.recover(fleet)
        return fleet

    @classmethod
    def look(cls) -> Fleet:
        """The fleet, read without the side effects of here() (no recovery, no record of the main
        worktree), for a look that must change nothing: completing a word on the command line.
        LookupError where there is no fleet."""
        repo = Repo.discover()
        main = repo.main_worktree
        cfg = config.load(main / config.CONFIG_NAME) if main is not None else None
        if main is None or cfg is None:
            raise LookupError("no fleet here")
        return cls(repo, main, cfg, (main / config.CONFIG_NAME).read_text(encoding="utf-8"))

    # -- who is who ------------------------------------------------------------------------------------

    def worktrees(self) -> list[Worktree]:
        """This repository's registered worktrees (git worktree list), read once per command
        and again after the fleet adds or removes one."""
        if self._trees is None:
            self._trees = self.repo.worktrees()
        return self._trees

    def forget_worktrees(self) -> None:
        self._trees = None

    def locate(self, agent: Agent) -> Path | None:
        """The agent's worktree as this repository registers it: the worktree that has its branch
        checked out, else a worktree registered at its configured path (the agent switched
        branches). None when this repository has none: a directory at the configured path that
        git does not list here (another clone's, or a leftover) is never the agent's."""
        tree = self.tree_of(agent)
        return tree.path if tree is not None else None

    def tree_of(self, agent: Agent) -> Worktree | None:
        """What git lists for the agent's worktree (see locate): the one this clone registered for
        it, else the one with its branch, else one at its planned path."""
        registered = self.registered_path(agent)
        mine = os.path.realpath(registered) if registered is not None else None
        planned = os.path.realpath(self.planned_worktree(agent))
        by_branch = at_path = None
        for wt in self.worktrees():
            if wt.bare or wt.prunable:
                continue
            here = os.path.realpath(wt.path)
            if here == mine:
                return wt
            if wt.has(agent.branch) and by_branch is None:
                by_branch = wt
            if here == planned:
                at_path = wt
        return by_branch or at_path

    def registered_path(self, agent: Agent) -> Path | None:
        """Where this clone registered the agent's worktree (git config fleet-agent.NAME.worktree,
        written by `git fleet-add` and `teleport pull`), else the path its own `worktree` key
        spells out; None when neither says (then its branch tells, as for the hook: check.py)."""
        if self._registered is None:
            self._registered = self.repo.registered_worktrees()
        if agent.name in self._registered:
            return self._registered[agent.name]
        return self.planned_worktree(agent) if agent.worktree is not None else None

    def register(self, agent: str, where: Path | None) -> None:
        """Record where this clone keeps the agent's worktree (None: forget it); a record of
        another agent at the same place (left by a worktree moved away) is dropped: one agent
        per worktree."""
        if where is not None:
            for other, path in self.repo.registered_worktrees().items():
                if other != agent and os.path.realpath(path) == os.path.realpath(where):
                    self.repo.register_worktree(other, None)
        self.repo.register_worktree(agent, where)
        self._registered = None

    def planned_worktree(self, agent: Agent) -> Path:
        """Where the configuration puts the agent's worktree: its `worktree`, else [fleet]
        worktree, with {repo} and {agent} filled in, relative to the main worktree."""
        where = templates.expand_worktree(self.config.worktree_template(agent), agent.name, self.main.name)
        return Path(os.path.normpath(self.main / where))

    def worktree_of(self, agent: Agent) -> Path:
        """The agent's worktree: the registered one, else where it would be made."""
        return self.locate(agent) or self.planned_worktree(agent)

    def current_agent(self) -> Agent | None:
        """The agent whose worktree this command runs in: the one registered at its path, else the
        one whose branch it has checked out (as the commit hook decides)."""
        top = self.repo.toplevel
        if top is None or self.repo.is_main_worktree():
            return None
        head = (self.repo.git_dir / "HEAD").read_text().strip()
        # the commit hook's answer, from the same compiled zones: its registration, else where
        # the config puts it, else the branch it has checked out
        compiled = check.load_compiled(str(self.repo.common_dir), str(self.main))
        found = compiled.agent_for(head[5:] if head.startswith("ref: ") else None, str(top)) if compiled else None
        return self.config.agents.get(found.name) if found is not None else None

    def may_edit(self, what: str) -> None:
        """Before a command edits the config: it is not an agent's, and it edits approved zones."""
        self.refuse_agents(what)
        self.require_approved("nothing is written on top of them")

    def require_approved(self, what: str) -> None:
        """Go on only with zones the person approved (approval.py): zones changed by hand are shown
        and need a yes on a terminal (self.confirm); a new overlap between zones is refused."""
        if self.text == self._approved:
            return  # (asked already in this command)
        unapproved = approval.check(self.repo.common_dir, self.config, self.overlap_pairs)
        if unapproved:
            err = unapproved.error(what, self.config_path, self.repo.common_dir)
            if unapproved.overlaps or self.confirm is None or not self.confirm(err.message, "approve these zones?"):
                raise err
            approval.record(self.repo.common_dir, self.text)
        self._approved = self.text

    def overlap_pairs(self, cfg: Config) -> dict[tuple[str, str], str]:
        return {(a, b): example for a, b, example in ownership.overlaps(Fleet(self.repo, self.main, cfg, cfg.text or ""))}

    def refuse_agents(self, what: str, *, but: str | None = None) -> None:
        """Refuse a command that changes the fleet or the base when an agent runs it: from its
        worktree, or from anywhere in the session the fleet started for it (FLEET_AGENT, which
        `git fleet-up` and `git fleet-run` set). An agent typing `git -C <main worktree> ...` in a
        shell of its own that it started without that variable is not seen: the sandbox closes that.
        `but`: the agent the command is about, which may run it on itself."""
        me = self.current_agent()
        if me is not None:
            why, name = f"this is its worktree ({self.repo.toplevel})", me.name
        elif os.environ.get("FLEET_AGENT"):
            why, name = "FLEET_AGENT is set: this runs in its session", os.environ["FLEET_AGENT"]
        else:
            return
        if name == but:
            return  # (what it does to itself)
        raise FleetError(f"agent '{name}' cannot {what}: only the orchestrator changes the fleet or the base ({why})",
                         f"run it in the main worktree ({self.main}), outside any agent's session; an agent may run "
                         f"{AGENT_MAY_RUN}")

    @contextmanager
    def editing(self) -> Iterator[None]:
        """Hold the fleet's lock (lock.py) while reading, checking and rewriting the config, so
        that two `git fleet-add` at once do not lose a registration; first finish what a killed
        `git fleet-add` left half done."""
        with lock.hold(self.repo.common_dir, self.waiting):
            self._reread()
            # a move that a killed command left (it may have been killed while this one waited)
            if moves.pending(self.repo) is not None:
                if not self.repo.is_main_worktree():
                    lost = lost_journal.unreadable(self.repo)
                    raise FleetError("a checkpoint merge or sync was interrupted and is not finished, so this waits"
                                     + (f"; its journal, {lost[0]}, cannot be read" if lost else ""),
                                     f"run git fleet-doctor in the main worktree ({self.main}) first" if lost else
                                     f"run any git fleet command in the main worktree ({self.main}) first")
                self.tell(moves.recover_held(self.repo))
            self.tell(interrupted_add.recover(self))
            yield

    def tell(self, lines: list[str]) -> None:
        """Pass on what recovery found; a line already said (on opening, say) is not said again."""
        for line in lines:
            if line in self.told:
                continue
            self.told.add(line)
            if self.warn is not None:
                self.warn(line)
            else:
                self.recovered.append(line)

    def _reread(self) -> None:
        """The config and worktrees as they are now (under the lock: as no one else changes them)."""
        text = self.config_path.read_text(encoding="utf-8")
        self.text, self.config = text, config.parse(self.config_path, text)
        self.forget_worktrees()

    def refresh_cache(self, cfg: Config) -> None:
        check.compile_config(str(self.repo.common_dir), str(self.main), cfg)

    def save(self, text: str) -> Config:
        cfg = config.parse(self.config_path, text)
        # an edit is made on top of approved zones only: it would approve whatever else it keeps
        self.require_approved("nothing is written on top of them")
        approval.write_config(self.repo.common_dir, self.config_path, text, pause)
        self.text, self.config = text, cfg
        pause("config-written")
        self.refresh_cache(cfg)
        return cfg

    # -- the bus ---------------------------------------------------------------------------------------

    def bus(self) -> Bus | RemoteBus:
        """The bus: on the fleet's remote when it spans machines (machines.py), else the files."""
        from .bus import Bus  # (only the commands that use the bus load it: ~20 ms, ctypes for statx)

        root, lease = Path(os.path.normpath(self.main / self.config.bus_dir)), config.parse_duration(self.config.lease)
        remote = machines.remote_of(self.repo)
        if remote is None:
            return Bus(root, lease)
        from .remote_bus import RemoteBus  # (only a fleet across machines)

        return RemoteBus(root, lease, machines.meeting_repo(self.repo), machines.at(self.repo), self.repo.common_dir,
                         remote, machines.this(self.repo).id, machines.poll_of(self.repo), machines.key(self.repo),
                         machines.place(self.repo, remote))
