"""Fleet = the orchestrator's config + the repository: add, remove, list agents; whose path is it."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import approval, check, config, lock
from .gateway import plumbing
from .config import Agent, Config
from .errors import FleetError, UsageError
from .files import write_atomic
from .pause import pause
from .gateway.repo import Repo, Worktree, remove_dead_lock
from .zones import Pattern, PatternError, Zone, find_overlap


@dataclass
class Report:
    """What a command did, for the CLI to print: warnings always, notes with --verbose."""

    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _check_templates(name: str, session: dict[str, Any]) -> None:
    for key in ("command", "resume"):
        template = session.get(key)
        if template:
            bad = config.unknown_placeholder(template)
            if bad:
                raise UsageError(f"agent '{name}': unknown placeholder {{{bad}}} in its {key}",
                                 "placeholders: " + ", ".join(f"{{{p}}}" for p in config.PLACEHOLDERS))


def _made_by_git_for(where: Path, common_dir: Path) -> bool:
    """Whether `where` is a linked worktree of this repository (its .git file points here)."""
    link = plumbing.read_file(str(where / ".git")) or ""
    return link.startswith("gitdir: ") and Path(link[8:]).parent == common_dir / "worktrees"


def _agent_record(agent: Agent) -> dict[str, Any]:
    return {k: getattr(agent, k) for k in ("name", "zone", "branch", "worktree", *Agent.SESSION_KEYS, "env", "port")}


def _agent_from_record(data: dict[str, Any]) -> Agent:
    return Agent(**{**data, "zone": tuple(data["zone"]), "env": tuple(tuple(kv) for kv in data["env"])})


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
        from . import moves

        orchestrator = repo.is_main_worktree()
        if orchestrator:
            repo.record_main_worktree()
        fleet.recovered = moves.recover(repo, orchestrator=orchestrator)
        if orchestrator and fleet._intent_path().exists():
            # as for merges: only the orchestrator, and only when no fleet command holds the lock
            # (one that does may be the add itself, still running)
            with lock.attempt(repo.common_dir) as held:
                if held:
                    fleet._reread()
                    fleet.recovered += fleet._undo_interrupted_add()
        return fleet

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
        where = config.expand_worktree(self.config.worktree_template(agent), agent.name, self.main.name)
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

    def forget(self) -> None:
        """Undo a fresh `git fleet-init` (no agents): its hooks, its config and its record."""
        from . import hooks

        hooks.uninstall(self.repo)
        _merges_into_base(self.repo, self.config.base, on=False)
        self.config_path.unlink(missing_ok=True)
        (self.repo.common_dir / approval.RECORD).unlink(missing_ok=True)

    def _may_edit(self, what: str) -> None:
        """Before a command edits the config: it is not an agent's, and it edits approved zones."""
        self.refuse_agents(what)
        self.require_approved("nothing is written on top of them")

    def require_approved(self, what: str) -> None:
        """Go on only with zones the person approved (approval.py): zones changed by hand are shown
        and need a yes on a terminal (self.confirm); a new overlap between zones is refused."""
        if self.text == self._approved:
            return  # (asked already in this command)
        unapproved = approval.check(self.repo.common_dir, self.config, self._overlap_pairs)
        if unapproved:
            err = unapproved.error(what, self.config_path, self.repo.common_dir)
            if unapproved.overlaps or self.confirm is None or not self.confirm(err.message, "approve these zones?"):
                raise err
            approval.record(self.repo.common_dir, self.text)
        self._approved = self.text

    def approve(self) -> list[str]:
        """Approve the zones as the file has them now; returns what changed since the last approval."""
        with self.editing():
            self.refuse_agents("approve zones")
            unapproved = approval.check(self.repo.common_dir, self.config, self._overlap_pairs)
            approval.record(self.repo.common_dir, self.text)
            return unapproved.lines()

    def _overlap_pairs(self, cfg: Config) -> dict[tuple[str, str], str]:
        return {(a, b): example for a, b, example in Fleet(self.repo, self.main, cfg, cfg.text or "").overlaps()}

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
        from . import moves

        with lock.hold(self.repo.common_dir, self.waiting):
            self._reread()
            # a move that a killed command left (it may have been killed while this one waited)
            if moves.pending(self.repo) is not None:
                if not self.repo.is_main_worktree():
                    raise FleetError("a checkpoint merge or sync was interrupted and is not finished, so this waits",
                                     f"run any git fleet command in the main worktree ({self.main}) first")
                self._tell(moves.recover_held(self.repo))
            self._tell(self._undo_interrupted_add())
            yield

    def _tell(self, lines: list[str]) -> None:
        for line in lines:
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

    def _save(self, text: str) -> Config:
        cfg = config.parse(self.config_path, text)
        # an edit is made on top of approved zones only: it would approve whatever else it keeps
        self.require_approved("nothing is written on top of them")
        approval.write_config(self.repo.common_dir, self.config_path, text, pause)
        self.text, self.config = text, cfg
        pause("config-written")
        self.refresh_cache(cfg)
        return cfg

    # -- add -------------------------------------------------------------------------------------------

    def add(self, name: str, zone: Sequence[str], *, branch: str | None = None, path: str | None = None,
            base: str | None = None, allow_overlap: bool = False, force: bool = False,
            session: dict[str, str | None] | None = None, env: tuple[tuple[str, str], ...] = ()) -> tuple[Agent, Report]:
        with self.editing():
            return self._add(name, zone, branch=branch, path=path, base=base, allow_overlap=allow_overlap,
                             force=force, session=session or {}, env=env)

    def _add(self, name: str, zone: Sequence[str], *, branch: str | None, path: str | None, base: str | None,
             allow_overlap: bool, force: bool, session: dict[str, str | None],
             env: tuple[tuple[str, str], ...]) -> tuple[Agent, Report]:
        report = Report()
        _check_templates(name, session)
        self._may_edit("add agents")
        config.check_agent_name(name)
        cfg = self.config
        if name in cfg.agents and self._adopted_as_asked(cfg.agents[name], zone, branch, path):
            report.notes.append(f"agent '{name}' was made by an interrupted `git fleet-add` and is now registered")
            self.write_brief(cfg.agents[name])
            self._setup(cfg.agents[name], report)
            return cfg.agents[name], report
        if name in cfg.agents:
            raise FleetError(f"agent '{name}' already exists (branch {cfg.agents[name].branch})",
                             f"remove it first with `git fleet-rm {name}`, or pick another name")
        if not zone:
            raise UsageError(f"agent '{name}' needs a zone", "give one or more --zone PATTERN (gitignore syntax)")
        try:
            new_zone = Zone(list(zone), self.config.ignore_case)
        except PatternError as e:
            raise UsageError(e.message, e.hint) from None

        count = len(cfg.agents) + 1
        if count > cfg.max_agents and not force:
            raise FleetError(
                f"refusing a fleet of {count} agents: the limit is {cfg.max_agents} (max_agents in {config.CONFIG_NAME})",
                "beyond 10 agents coordination costs exceed the benefits; pass --force to go ahead anyway")
        if count > cfg.warn_agents:
            report.warnings.append(f"this makes {count} agents; beyond {cfg.warn_agents} coordination costs grow "
                                   "(3-7 is the sweet spot)")

        base_ref = base or cfg.base
        base_commit = self.repo.resolve(base_ref)
        report.warnings += self._check_zone(name, zone, base_commit)
        if not allow_overlap:
            self._refuse_overlap(name, new_zone, base_commit)

        branch_given = branch is not None
        branch = branch or cfg.default_branch(name)
        if not self.repo.valid_branch_name(branch):
            raise UsageError(f"'{branch}' is not a valid branch name", "see `git help check-ref-format`")
        if branch == cfg.base:
            raise UsageError(f"agent '{name}' cannot work on the base branch '{cfg.base}'",
                             "agents work on branches of their own; omit --branch")
        for other in cfg.agents.values():
            if other.branch == branch:
                raise FleetError(f"branch {branch} already belongs to agent '{other.name}'")
        tip = self.repo.branch_tip(branch)
        if tip is not None and not branch_given:
            raise FleetError(f"branch {branch} already exists",
                             f"adopt it as it is with --branch {branch}, or delete it first (git branch -d {branch})")
        if tip is not None and base is not None:
            report.warnings.append(f"--base {base} is ignored: the existing branch {branch} is adopted as it is")
        if tip is None and base_commit is None:
            raise FleetError(f"base '{base_ref}' does not exist in this repository",
                             "commit something on the base branch first, or give --base REF"
                             if base is None else "name an existing branch, tag or commit")
        for wt in self.repo.worktrees():
            if wt.has(branch):
                raise FleetError(f"branch {branch} is checked out in {wt.path}",
                                 "an agent needs a worktree of its own; switch that worktree to another branch first")

        agent = Agent(name=name, zone=tuple(zone), ignore_case=cfg.ignore_case, branch=branch,
                      session=session.get("session"), model=session.get("model"), command=session.get("command"),
                      resume=session.get("resume"), env=env, port=self._free_port())
        # where this clone keeps it is this clone's (registered below), never the committed file's
        where = Path(os.path.abspath(path)) if path else self.planned_worktree(agent)
        if where.exists() and (not where.is_dir() or any(where.iterdir())):
            raise FleetError(f"worktree path {where} already exists and is not empty",
                             "give another place with --path DIR")

        new_text = config.with_agent(cfg, self.text, agent)  # validated before anything is written

        # a record of what is about to be made: a process killed before the config is written
        # leaves it, and the next command that takes the lock undoes (or adopts) what it finds
        intent = self._intent_path()
        write_atomic(intent, json.dumps({"agent": _agent_record(agent), "worktree": str(where), "time": time.time(),
                                         "base": base_commit if tip is None else tip, "made_branch": tip is None}))
        created_branch = created_tree = False
        try:
            if tip is None:
                assert base_commit is not None
                self.repo.create_branch(branch, base_commit)
                created_branch = True
            pause("add-after-branch")
            self.repo.worktree_add(where, branch)
            created_tree = True
            self.register(name, where)
            pause("add-after-worktree")
            self.forget_worktrees()
            self._save(new_text)
        except BaseException:
            if created_tree:
                self.register(name, None)
                self.repo.worktree_remove(where, force=True)
            self.repo.forget_worktree(where)
            if created_branch:
                self.repo.delete_branch(branch, base_commit or "")
            self.forget_worktrees()
            intent.unlink()
            raise
        intent.unlink()
        self.write_brief(agent)
        made = (f"new branch {branch} from {base_ref} ({(base_commit or '')[:7]})" if tip is None
                else f"branch {branch} adopted as it is ({tip[:7]})")
        report.notes.append(f"added agent '{name}': {made}, worktree {where}")
        self._setup(agent, report)
        return agent, report

    def _adopted_as_asked(self, agent: Agent, zone: Sequence[str], branch: str | None, path: str | None) -> bool:
        """Whether this command just adopted `agent` from a killed `git fleet-add` (see
        _undo_interrupted_add) that asked for what this one asks: then this add is that one, done."""
        return (self.adopted == agent.name and agent.zone == tuple(zone) and branch in (None, agent.branch)
                and (path is None or os.path.realpath(path) == os.path.realpath(self.worktree_of(agent))))

    def _intent_path(self) -> Path:
        return self.repo.common_dir / "fleet" / "adding"

    def _undo_interrupted_add(self) -> list[str]:
        """Finish what a killed `git fleet-add` left (we hold the lock, so its process is gone): a
        branch and worktree it made but never registered are removed while they hold nothing new,
        and adopted, registered as the add meant to, when work was done in them since."""
        intent = self._intent_path()
        try:
            data = json.loads(intent.read_text(encoding="utf-8"))
            agent = _agent_from_record(data["agent"])
            where, start, made_branch = Path(data["worktree"]), data["base"], bool(data["made_branch"])
            since = float(data.get("time", 0))
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as e:
            return [(f"{intent}: the record of an interrupted `git fleet-add` cannot be read ({e}); "
                    "remove it after checking `git worktree list` and `git branch`")]
        if agent.name in self.config.agents:
            intent.unlink()  # it was registered: only the record was left
            return []
        self.register(agent.name, None)  # (adopting registers it again)
        # git killed inside `git update-ref` or `git worktree add` leaves its lock, or a worktree
        # record so new that `git worktree list` fails on it
        kept_lock = made_branch and remove_dead_lock(
            self.repo.common_dir / "refs" / "heads" / f"{agent.branch}.lock", start, since) is False
        if self.repo.drop_unwritten_record(where):
            self.forget_worktrees()
        tree = next((w for w in self.worktrees() if not w.bare and os.path.realpath(w.path) == os.path.realpath(where)
                     and (w.branch == agent.branch or w.locked is not None)), None)
        # git locks a worktree it adds until its checkout is done: locked, it was killed midway, and
        # the files it had not written yet are no one's deletions
        half = tree is not None and tree.locked is not None
        ours = where.is_dir() and _made_by_git_for(where, self.repo.common_dir)
        tip = self.repo.branch_tip(agent.branch)
        changed: list[str] = []
        unwritten: list[str] = []
        if tree is not None and ours and half:
            changed, unwritten = self.repo.unfinished_checkout(where, start)
        elif tree is not None and ours:
            changed = self.repo.dirty_paths(where)
        if tree is not None and ours and not half:
            # ignored files count as work too (a `git fleet-add` would not have made them), git-fleet's own aside
            changed += [p for code, p in self.repo.status(where, ignored=True)
                        if code == "!!" and p.split("/", 1)[0] != ".fleet"]
        if tree is not None and ours and (changed or (tip is not None and tip != start)):
            return self._adopt(agent, where, unwritten if half else None)
        if tree is not None and ours:
            self.repo.worktree_remove(where, force=True)  # a lock of git's own included
        elif where.is_dir() and set(os.listdir(where)) <= {".git"}:
            shutil.rmtree(where)  # git was killed while making it: its start, nothing else
        elif where.is_dir():
            registered = next((w for w in self.worktrees() if os.path.realpath(w.path) == os.path.realpath(where)), None)
            intent.unlink()
            what = f"is on {registered.branch or 'a detached HEAD'} now" if registered else "is not a worktree of it"
            return [f"an interrupted `git fleet-add {agent.name}` made {where}, which {what}: it is left as it is, "
                    "and nothing was registered",
                    f"adopt it with git fleet-add {agent.name} --branch BRANCH --path {where} --zone ..., or remove "
                    "it yourself (git worktree remove)"]
        self.repo.forget_worktree(where)  # (a record git left locked, half made, included)
        self.forget_worktrees()
        if made_branch and tip == start and not any(w.has(agent.branch) for w in self.worktrees()):
            self.repo.delete_branch(agent.branch, start)
        intent.unlink()
        return [f"removed what an interrupted `git fleet-add {agent.name}` had made; nothing was registered"] + (
            [f"{self.repo.common_dir}/refs/heads/{agent.branch}.lock was left: another git process holds it, or one "
             "was killed"] if kept_lock else [])

    def _adopt(self, agent: Agent, where: Path, unwritten: list[str] | None) -> list[str]:
        """Register what a killed `git fleet-add` made, as it meant to, finishing the checkout it
        left half done (unwritten: the files to write; None when it was done)."""
        self.register(agent.name, where)  # first: a kill after the config is written leaves both
        try:
            self._save(config.with_agent(self.config, self.text, agent))
        except FleetError as e:
            self.register(agent.name, None)
            return [(f"an interrupted `git fleet-add {agent.name}` left {where} (branch {agent.branch}) with work "
                    f"in it, and it cannot be registered: {e.message}"),
                    f"adopt it by hand: git fleet-add {agent.name} --branch {agent.branch} --path {where} --zone ..."]
        if unwritten is not None:
            self.repo.finish_checkout(where, agent.branch, unwritten)
        self._intent_path().unlink()
        self.adopted = agent.name
        return [(f"adopted agent '{agent.name}' ({where}, branch {agent.branch}): an interrupted `git fleet-add` "
                "made it and work was done there since")]

    def _free_port(self) -> int | None:
        if self.config.ports is None:
            return None
        low, high = self.config.ports
        taken = {a.port for a in self.config.agents.values()}
        port = next((p for p in range(low, high + 1) if p not in taken), None)
        if port is None:
            raise FleetError(f"no free port left in setup.ports ({low}-{high})", "widen the range in [setup] ports")
        return port

    def _setup(self, agent: Agent, report: Report) -> None:
        """Copy the configured ignored files into the new worktree, then run the setup command there."""
        import shutil
        import subprocess

        where = self.worktree_of(agent)
        for rel in self.config.setup_copy:
            src = self.main / rel
            if src.is_file():
                (where / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, where / rel)
            elif src.is_dir():
                shutil.copytree(src, where / rel, dirs_exist_ok=True)
            else:
                report.warnings.append(f"setup.copy: {rel} does not exist in the main worktree; not copied")
        if self.config.setup_run:
            proc = subprocess.run(["sh", "-c", self.config.setup_run], cwd=where, env=self.environment(agent),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                tail = "\n".join("  " + line for line in proc.stdout.decode("utf-8", "replace").rstrip().splitlines()[-15:])
                raise FleetError(f"agent '{agent.name}' was added, but its setup `{self.config.setup_run}` failed "
                                 f"(exit {proc.returncode}) in {where}:\n{tail}",
                                 f"fix it, then run it again: git fleet-run {agent.name} -- sh -c "
                                 f"'{self.config.setup_run}'")

    # -- set / run / brief -----------------------------------------------------------------------------

    def set(self, name: str, *, zone: Sequence[str] = (), allow_overlap: bool = False,
            session: dict[str, str | None] | None = None) -> Agent:
        """Change an agent's zone or session settings, with the same checks as add."""
        import dataclasses

        with self.editing():
            self._may_edit("change agents")
            agent = self.config.agent(name)
            changes: dict[str, Any] = {k: v for k, v in (session or {}).items() if v is not None}
            _check_templates(name, changes)
            if zone:
                try:
                    new_zone = Zone(list(zone), self.config.ignore_case)
                except PatternError as e:
                    raise UsageError(e.message, e.hint) from None
                self._tell(self._check_zone(name, zone, self.repo.resolve(self.config.base)))
                if not allow_overlap:
                    others = Fleet(self.repo, self.main, dataclasses.replace(
                        self.config, agents={k: v for k, v in self.config.agents.items() if k != name}), self.text)
                    others._refuse_overlap(name, new_zone, self.repo.resolve(self.config.base))
                changes["zone"] = tuple(zone)
            if not changes:
                raise UsageError("nothing to change", "give --zone, --session, --model, --command or --resume")
            updated = dataclasses.replace(agent, **changes)
            self._save(config.with_agent(self.config, self.text, updated))
            self.write_brief(updated)
            return updated

    def add_checkpoint(self, name: str, agents: Sequence[str], test: str | None = None,
                       timeout: str | None = None) -> config.Checkpoint:
        with self.editing():
            self._may_edit("declare checkpoints")
            return self._save(config.with_checkpoint(self.config, self.text, name, agents, test, timeout)).checkpoint(name)

    def propose_zones(self, limit: int = 7) -> list[tuple[str, str, int]]:
        """Agents to start with, one per top-level directory of the base (or of the one directory
        that holds nearly everything): (name, zone pattern, tracked files), largest first."""
        import re
        from collections import Counter

        base = self.repo.resolve(self.config.base) or "HEAD"
        files = list(self.repo.tracked_files(base))

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
        taken = set(self.config.agents)
        proposals = []
        for d, n in dirs.most_common():
            name = re.sub(r"[^A-Za-z0-9._-]+", "-", d.rsplit("/", 1)[-1]).strip(".-").lower() or "agent"
            if name in taken or d.rsplit("/", 1)[-1].startswith("."):
                continue
            taken.add(name)
            proposals.append((name, f"{d}/**", n))
        return proposals[:limit]

    def claimed_tasks(self, agent: Agent) -> list[Any]:
        """The tasks whose live claim is the agent's: claimed, or with a spec broken by hand since
        (the claim is the truth; its holder goes on with it and may finish it)."""
        now = time.time()
        return [t for t in self.bus().all() if t.claimed_by == agent.name and t.result is None
                and t.expires is not None and t.expires > now]

    def values(self, agent: Agent) -> dict[str, str]:
        """What a command template's placeholders stand for, for this agent."""
        tasks = self.claimed_tasks(agent)
        return {"agent": agent.name, "session": agent.session or agent.name, "model": agent.model or self.config.model,
                "worktree": str(self.worktree_of(agent)), "branch": agent.branch, "zone": " ".join(agent.zone),
                "task": tasks[0].name if tasks else "", "port": str(agent.port) if agent.port else ""}

    def environment(self, agent: Agent) -> dict[str, str]:
        """The fleet environment an agent's commands run with (its own env on top)."""
        v = self.values(agent)
        # run where the agent's worktree is, never where the orchestrator's GIT_DIR points
        env = {**self.repo.env_for(Path(v["worktree"])), "FLEET_AGENT": agent.name, "FLEET_SESSION": v["session"],
               "FLEET_MODEL": v["model"], "FLEET_ZONE": "\n".join(agent.zone), "FLEET_BRANCH": agent.branch,
               "FLEET_WORKTREE": v["worktree"], "FLEET_BUS": str(self.bus().root), "FLEET_TASK": v["task"],
               "FLEET_BRIEF": str(self.worktree_of(agent) / ".fleet" / "brief.md"),
               **({"FLEET_PORT": str(agent.port)} if agent.port else {})}
        env.update(dict(agent.env))
        return env

    def missing_worktree(self, agent: Agent) -> FleetError:
        where = self.planned_worktree(agent)
        make = f"git worktree add {shlex.quote(str(where))} {shlex.quote(agent.branch)}"
        moved = next((w for w in self.worktrees() if w.prunable and agent.branch in (w.branch, w.busy)), None)
        if moved is not None:  # its record is there, its directory is not: moved by hand, or deleted
            return FleetError(f"agent '{agent.name}' has no worktree in this repository: the one at {moved.path} is "
                              "gone (moved by hand, or deleted)",
                              f"moved: git worktree repair <its new place>; deleted: git worktree prune && {make}")
        return FleetError(f"agent '{agent.name}' has no worktree in this repository (expected at {where})",
                          f"restore it from its branch: {make}")

    def require_worktree(self, agent: Agent) -> Path:
        """The agent's registered worktree, or the error that says how to restore it."""
        where = self.locate(agent)
        if where is None or not where.is_dir():
            raise self.missing_worktree(agent)
        return where

    def run(self, name: str, argv: Sequence[str]) -> int:
        """Run a command in an agent's worktree with its environment; its exit status is returned."""
        import subprocess

        agent = self.config.agent(name)
        where = self.require_worktree(agent)
        if not argv:
            raise UsageError("no command given", f"git fleet-run {name} -- COMMAND [ARGS...]")
        self.write_brief(agent)
        try:
            return subprocess.run(list(argv), cwd=where, env=self.environment(agent)).returncode
        except FileNotFoundError:
            raise FleetError(f"command not found: {argv[0]}", "check the command, or your PATH") from None

    def write_brief(self, agent: Agent) -> Path | None:
        """.fleet/brief.md in the agent's worktree (ignored by git): its zone, branch, the bus and its
        claimed tasks, for an agent that reads its instructions from a file. None when the agent
        has no worktree here."""
        from .files import ignored_dir, write_atomic

        tree = self.locate(agent)
        if tree is None or not tree.is_dir():
            return None
        where = tree / ".fleet"
        with self.repo.scratch() as staging:
            ignored_dir(where, "git-fleet's files for this agent: never tracked", staging)
        bus = self.bus()
        tasks = self.claimed_tasks(agent)
        lines = [f"# Brief for agent {agent.name}", "",
                 f"You work in {tree} on branch {agent.branch}.", "",
                 "## Your zone", "",
                 "You may change only the paths these gitignore patterns match (the last match decides):", ""]
        lines += [f"- `{p}`" for p in agent.zone]
        lines += ["", "A commit that touches anything else is rejected. `git fleet-who PATH` says who owns a path.",
                  "Work for another agent's paths goes to that agent; anything else to the orchestrator.", "",
                  "## Tasks", "", f"The task bus is {bus.root} (tasks/, results/, master_plan.md).", ""]
        if tasks:
            lines += [f"Claimed by you: {t.name} {t.title} ({t.path})" for t in tasks] + [""]
        else:
            lines += ["You hold no task now.", ""]
        lines += ["- `git fleet-task claim` takes the next task for you (`--wait` blocks until there is one);",
                  "- `git fleet-task renew ID` while you work on it, so your lease does not lapse;",
                  "- `git fleet-task done ID --result-file FILE` (or `fail ID --reason ...`) when you finish.", ""]
        write_atomic(where / "brief.md", "\n".join(lines))
        return where / "brief.md"

    def _check_zone(self, name: str, patterns: Sequence[str], base_commit: str | None) -> list[str]:
        """Refuse a zone pattern that is the fleet's own configuration or an absolute path into this
        repository (a leading '/' anchors a pattern at the root); warn of one that looks like an
        absolute path elsewhere, and of patterns that own no tracked file (a typo gives an agent
        that owns nothing; kept, as the agent may be there to create those files)."""
        fold = str.lower if self.config.ignore_case else str
        warnings, empty = [], []
        tracked = list(self.repo.tracked_files(base_commit)) if base_commit else []
        for text in patterns:
            if text.startswith("!"):
                continue
            if fold(text.strip().strip("/")) == fold(config.CONFIG_NAME):
                raise UsageError(f"zone pattern '{text}' is {config.CONFIG_NAME}, the fleet's own configuration: "
                                 "no agent may own it", "the orchestrator changes it, in the main worktree")
            if text.startswith(str(self.main) + "/"):
                raise UsageError(f"zone pattern '{text}' is an absolute path; zones are relative to the repository root",
                                 f"write it as '{text[len(str(self.main)):]}' (a leading '/' anchors it at the root)")
            first = text[1:].split("/", 1)[0] if text.startswith("/") else ""
            if first and os.path.isdir("/" + first) and not (self.main / first).exists():
                warnings.append(f"zone pattern '{text}' of '{name}' looks like an absolute path: a leading '/' anchors "
                                "a pattern at the repository root")
            elif tracked and not any(Zone([text], self.config.ignore_case).owns(p) for p in tracked):
                empty.append(text)
        if empty:
            warnings.append(f"zone pattern(s) of '{name}' own no tracked file in {self.config.base}: "
                            + "  ".join(empty) + " (a typo? kept, for files the agent will create)")
        return warnings

    def _refuse_overlap(self, name: str, zone: Zone, base_commit: str | None) -> None:
        # only the tracked files the new zone owns can be owned twice: filter once, not per agent
        known = [p for p in self.repo.tracked_files(base_commit) if zone.owns(p)] if base_commit else []
        for other in self.config.agents.values():
            example = find_overlap(zone, other.compiled_zone(), known)
            if example is not None:
                raise FleetError(
                    f"zone of '{name}' overlaps the zone of agent '{other.name}': both own '{example}'",
                    f"'{other.name}' owns: {'  '.join(other.zone)}\n"
                    "narrow the zone (a '!pattern' takes paths out), or pass --allow-overlap")

    # -- rm --------------------------------------------------------------------------------------------

    def remove(self, name: str, *, force: bool = False, keep_branch: bool = False) -> Report:
        with self.editing():
            return self._remove(name, force=force, keep_branch=keep_branch)

    def _remove(self, name: str, *, force: bool, keep_branch: bool) -> Report:
        report = Report()
        self._may_edit("remove agents")
        agent = self.config.agent(name)
        for cp in self.config.checkpoints.values():
            if name in cp.agents:
                raise FleetError(f"agent '{name}' is part of checkpoint '{cp.name}'",
                                 f"take it out of [checkpoints.{cp.name}] in {config.CONFIG_NAME} first")
        where = self.locate(agent)
        has_tree = where is not None and where.is_dir()
        moved = [w for w in self.worktrees() if w.prunable and agent.branch in (w.branch, w.busy)]
        if where is None and moved and not force:
            raise FleetError(f"agent '{name}' has a worktree record at {moved[0].path} whose directory is gone: moved "
                             "by hand, with its work, or deleted?",
                             f"moved: git worktree repair <its new place>, then git fleet-rm {name} sees its work; "
                             "deleted: pass --force")
        if where is not None and has_tree:
            # never pull the worktree out from under a running agent (even with --force, which is
            # about its uncommitted work): it would go on in a deleted directory, out of sight
            from .processes import working_in

            busy = working_in(where)
            if busy:
                raise FleetError(f"agent '{name}' is still running in {where}: "
                                 + ", ".join(busy[:3]) + (" and more" if len(busy) > 3 else ""),
                                 f"stop it first: git fleet-down {name} (or end those processes), then git fleet-rm {name}")
        if where is not None and has_tree and not force:
            dirty = self.repo.dirty_paths(where)
            if dirty:
                shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
                raise FleetError(f"agent '{name}' has uncommitted work in {where}: {shown}",
                                 "commit or discard it first, or pass --force to throw it away")
        unmerged = self.repo.count_unmerged(agent.branch, self.config.base)
        if unmerged and not force:
            raise FleetError(f"branch {agent.branch} has {unmerged} commit(s) that {self.config.base} does not have",
                             f"merge them first, or pass --force (the branch is kept; delete it with "
                             f"`git branch -D {agent.branch}`)")
        new_text = config.without_agent(self.config, self.text, name)
        if where is not None and has_tree:
            self.repo.worktree_remove(where, force=force)
        self.register(name, None)
        for stale in (w for w in self.worktrees() if w.prunable and agent.branch in (w.branch, w.busy)):
            self.repo.forget_worktree(stale.path)  # its directory is gone: its record goes with the agent
        self.forget_worktrees()
        self._save(new_text)
        tip = self.repo.branch_tip(agent.branch)
        if tip is None:
            pass
        elif unmerged or keep_branch:
            if unmerged:
                report.warnings.append(f"kept branch {agent.branch}: it has {unmerged} unmerged commit(s)")
        elif not any(w.has(agent.branch) for w in self.worktrees()):
            self.repo.delete_branch(agent.branch, tip)
            report.notes.append(f"deleted branch {agent.branch} (fully merged into {self.config.base})")
        report.notes.append(f"removed agent '{name}'")
        return report

    # -- list / who / zones ----------------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        trees = {os.path.realpath(w.path): w for w in self.worktrees()}
        rows = []
        for a in self.config.agents.values():
            located = self.locate(a)
            where = located or self.planned_worktree(a)
            wt = trees.get(os.path.realpath(where))
            tip = self.repo.branch_tip(a.branch)
            state = "ok"
            if located is None or wt is None or not where.is_dir():
                state = "missing worktree"
            elif not wt.has(a.branch):
                state = f"worktree on {wt.branch or 'detached HEAD'}"
            if tip is None:
                state = "missing branch"
            rows.append({"agent": a.name, "branch": a.branch, "worktree": str(where), "zone": list(a.zone),
                         "head": tip, "state": state})
        return rows

    # -- merges ----------------------------------------------------------------------------------------

    def merge(self, names: Sequence[str], checkpoint: str | None = None, *, dry_run: bool = False) -> Any:
        """Plan the merge of the named agents (a checkpoint's, or every agent with new commits) and,
        unless dry_run, carry it out all or nothing. Returns the merge.Plan."""
        from . import merge

        from . import runner

        def planned() -> Any:
            cp = self.config.checkpoint(checkpoint) if checkpoint else None
            if cp and names:
                raise UsageError("give either --checkpoint or agent names, not both")
            chosen = [self.config.agent(n) for n in (cp.agents if cp else names or list(self.config.agents))]
            return merge.plan(self.repo, self.config, self.main, chosen, cp)

        with self.editing():
            self.require_approved("the merge counts only approved zones")
            p = planned()
            if dry_run:
                return p
            merge.check_ready(self.repo, p)
        with runner.stoppable():  # the test runs without the lock: the fleet's other commands go on
            merge.run_test(self.repo, p)
        with self.editing():
            again = planned() if p.new is not None else p
            if not again.ok:
                raise again.failure()  # (local changes in the base's work tree, made during the test, say)
            if p.new is not None and not merge.same_merge(self.repo, p, again):
                raise FleetError(f"{p.base} or an agent's branch moved while the checkpoint test ran (or the "
                                 "configuration changed what the merge makes); nothing was changed",
                                 "run the merge again: the test runs on what is merged")
            p.warnings = merge.land(self.repo, p)
            return p

    def sync(self, names: Sequence[str]) -> list[Any]:
        """Bring the base into the named agents' branches (all by default); see merge.sync_one."""
        from . import merge

        with self.editing():
            chosen = [self.config.agent(n) for n in names] if names else list(self.config.agents.values())
            return [merge.sync_one(self.repo, self.config, a) for a in chosen]

    def status(self) -> dict[str, Any]:
        """One row per agent (ahead, behind, dirty, out of zone, last commit) and the forecast."""
        from . import merge

        cfg = self.config
        compiled = check.compile_config(str(self.repo.common_dir), str(self.main), cfg)
        all_tips = self.repo.branch_tips()
        base_tip = all_tips[cfg.base][0] if cfg.base in all_tips else None
        branch_tips = {a.name: all_tips.get(a.branch, (None, 0))[0] for a in cfg.agents.values()}
        found = {a: t for a, t in branch_tips.items() if t is not None}
        # the slow parts are git processes that do not depend on each other: `git status` of each
        # worktree and the one `git log` of the zone check run side by side
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            located = {a.name: self.locate(a) for a in cfg.agents.values()}
            dirty_jobs = {name: pool.submit(self.repo.dirty_paths, where)
                          for name, where in located.items() if where is not None and where.is_dir()}
            histories = (plumbing.commits_by_tip(found, [base_tip], str(self.repo.common_dir))
                         if base_tip else {})
            dirty_of = {name: job.result() for name, job in dirty_jobs.items()}
        rows, tips = [], {}
        for a in cfg.agents.values():
            tip = branch_tips[a.name]
            row: dict[str, Any] = {"agent": a.name, "branch": a.branch, "ahead": None, "behind": None,
                                   "dirty": None, "out_of_zone": [], "last_commit": None}
            if tip is not None:
                row["last_commit"] = all_tips[a.branch][1]
                if base_tip is not None:
                    ahead, behind = self.repo.pygit.ahead_behind(tip, base_tip)
                    row["ahead"], row["behind"] = int(ahead), int(behind)
                    bad = check.check_history(compiled, compiled.agents[a.name], histories[a.name])
                    row["out_of_zone"] = sorted({v.path for v in bad})
                if row["ahead"]:
                    tips[a.name] = tip
            if a.name in dirty_of:
                dirty = dirty_of[a.name]
                row["dirty"] = len(dirty)
                zone = compiled.agents[a.name]
                row["out_of_zone"] += sorted(p for p in dirty if not zone.owns(p) or compiled.is_protected(p))
            rows.append(row)
        fc = merge.forecast(self.repo, cfg.base, tips, cfg.union)
        return {"base": cfg.base, "agents": rows, **fc.as_dict()}

    def checkpoints(self) -> list[dict[str, Any]]:
        """Each checkpoint with its agents' readiness: ahead, dirty, out of zone, would conflict."""
        from . import merge

        rows = []
        for cp in self.config.checkpoints.values():
            p = merge.plan(self.repo, self.config, self.main, [self.config.agents[a] for a in cp.agents], cp)
            steps = {s.agent.name: s for s in p.steps}
            agents = []
            for name in cp.agents:
                a = self.config.agents[name]
                s = steps.get(name)
                where = self.locate(a)
                dirty = len(self.repo.dirty_paths(where)) if where is not None and where.is_dir() else None
                agents.append({"agent": name, "ahead": s.ahead if s else 0, "dirty": dirty,
                               "out_of_zone": [v.path for v in s.violations] if s else [],
                               "conflicts": list(s.conflicts) if s else []})
            # one answer with `git fleet-merge --checkpoint` (-n or not): the same plan says it
            state = ("blocked" if not p.ok else "ready" if p.new else "merged" if p.rounds else "nothing new")
            rows.append({"checkpoint": cp.name, "state": state, "test": cp.test, "agents": agents,
                         "rounds": p.rounds, "tag": cp.tag(p.rounds) if p.rounds else None})
        return rows

    # -- the bus ---------------------------------------------------------------------------------------

    def bus(self) -> Any:
        from . import bus

        return bus.Bus(Path(os.path.normpath(self.main / self.config.bus_dir)), config.parse_duration(self.config.lease))

    def worker(self, given: str | None) -> str:
        """Who is working: --agent, else $FLEET_AGENT, else the agent whose worktree this is."""
        name = given or os.environ.get("FLEET_AGENT") or (a.name if (a := self.current_agent()) else None)
        if not name:
            raise UsageError("who is working? this is not an agent's worktree",
                             "give --agent NAME (or set FLEET_AGENT)")
        return name

    def repo_path(self, arg: str) -> str:
        """A path given on the command line, relative to the repository root."""
        top = self.repo.toplevel or self.main
        absolute = os.path.abspath(arg)
        parent, leaf = os.path.split(absolute)
        real = os.path.join(os.path.realpath(parent), leaf) if leaf else os.path.realpath(parent)
        rel = os.path.relpath(real, os.path.realpath(top))
        if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
            raise UsageError(f"'{arg}' is outside the repository {top}", "give paths inside the repository")
        return rel.replace(os.sep, "/")

    def has_directory(self, path: str) -> bool:
        """Whether the base has a directory at `path` (files below it)."""
        base = self.repo.resolve(self.config.base)
        return base is not None and self.repo.ref_value(f"{base}:{path.rstrip('/')}^{{tree}}") is not None

    def owners_inside(self, directory: str) -> dict[str | None, int]:
        """Who owns the files below a directory, in the base and in this worktree's index (None:
        the orchestrator), with how many each: most first, then by name, the orchestrator last."""
        prefix = directory.rstrip("/") + "/"
        base = self.repo.resolve(self.config.base)
        files = {p for p in self.repo.tracked_files(base) if p.startswith(prefix)} if base else set()
        top = self.repo.toplevel or self.main
        listed = plumbing.git(["ls-files", "-z", "--full-name", "--", f":(top){prefix}"], top, check=False).stdout
        files |= {p.decode("utf-8", "surrogateescape") for p in listed.split(b"\0") if p}
        counts: dict[str | None, int] = {}
        for path in files:
            names: list[str | None] = [name for name, _pattern in self.owners(path)] or [None]
            for name in names:
                counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or "")))

    def owners(self, path: str) -> list[tuple[str, Pattern]]:
        """(agent, deciding pattern) for each agent that owns `path`."""
        found = []
        for a in self.config.agents.values():
            pat = a.compiled_zone().deciding(path)
            if pat is not None and pat.include:
                found.append((a.name, pat))
        return found

    def overlaps(self) -> list[tuple[str, str, str]]:
        names = sorted(self.config.agents)
        zones = {n: self.config.agents[n].compiled_zone() for n in names}
        base = self.repo.resolve(self.config.base)
        known = list(self.repo.tracked_files(base)) if base else []
        found = []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                example = find_overlap(zones[a], zones[b], known)
                if example is not None:
                    found.append((a, b, example))
        return found


# -- init ----------------------------------------------------------------------------------------------

@dataclass
class InitResult:
    config_path: Path | None
    created: bool
    hooks: Any  # hooks.HookReport
    report: Report


def init(*, base: str | None = None, server: bool = False, uninstall: bool = False,
         orchestrator_keys: Sequence[str] = (), agent_keys: Sequence[tuple[str, str]] = (),
         base_push: str | None = None) -> InitResult:
    """Write a commented .gitfleet.toml if there is none and install the hooks; safe to repeat."""
    from . import hooks

    repo = Repo.discover()
    report = Report()
    if (orchestrator_keys or agent_keys or base_push) and not repo.bare:
        raise UsageError("--orchestrator-key, --agent-key and --base-push are for a bare repository that agents push "
                         "to", "run it there: git -C <server's repository> fleet-init --server ...")
    if repo.bare or server:
        names = hooks.SERVER_HOOKS if repo.bare else hooks.WORKTREE_HOOKS
        if uninstall:
            return InitResult(None, False, hooks.uninstall(repo, names), report)
        if base is not None and not repo.valid_branch_name(base):
            raise UsageError(f"'{base}' is not a valid branch name")
        if repo.bare:
            from . import server as rules

            report.notes += rules.install(str(repo.common_dir), orchestrator_keys, agent_keys, base_push, base)
            where = plumbing.server_base(str(repo.common_dir))
            if repo.ref_value(f"refs/heads/{where}:{config.CONFIG_NAME}") is None:
                report.warnings.append(f"{where}:{config.CONFIG_NAME} is not here yet: until it is pushed, pushes are "
                                       "not zone-checked (each one says so)")
            return InitResult(None, False, hooks.install(repo, names), report)
        if base is not None:
            repo.config_set("fleet.base", base)
    main = repo.main_worktree
    assert main is not None
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
    if repo.is_main_worktree():
        repo.record_main_worktree()
    if uninstall:
        _merges_into_base(repo, fleet.config.base if fleet is not None else None, on=False)
        (repo.common_dir / approval.RECORD).unlink(missing_ok=True)  # (no fleet to hold merges to)
        return InitResult(main / config.CONFIG_NAME, False, hooks.uninstall(repo), report)
    path = main / config.CONFIG_NAME
    cfg = config.load(path)
    created = cfg is None
    if cfg is None:
        if base is None:
            head = (repo.common_dir / "HEAD").read_text().strip()
            base = head[16:] if head.startswith("ref: refs/heads/") else config.DEFAULT_BASE
        elif not repo.valid_branch_name(base):
            raise UsageError(f"'{base}' is not a valid branch name", "see `git help check-ref-format`")
        text = config.new_config_text(base)
        cfg = config.parse(path, text)
        approval.write_config(repo.common_dir, path, text)
        if repo.resolve(base) is None:
            report.warnings.append(f"base branch '{base}' has no commits yet; agents can be added after the first commit")
    elif base is not None and base != cfg.base:
        report.warnings.append(f"{path.name} already names base '{cfg.base}'; edit it there to change it")
    hook_report = hooks.install(repo)
    _merges_into_base(repo, cfg.base, on=True)
    check.compile_config(str(repo.common_dir), str(main), cfg)
    return InitResult(path, created, hook_report, report)


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
