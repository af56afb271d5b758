"""The zone check at the edit: whether an agent CLI may write a file, decided before it does.

An agent CLI's hook (agent_hook.py) asks it for every Write or Edit of every agent, so it starts
no git and imports what the commit hook does: the worktree is found from its `.git` file, the
zones from the compiled cache (check.py). The hook's command names the fleet it was installed for
(its common dir and main worktree), so a worktree whose `.git` was moved away, or a fleet whose
configuration is gone from the main worktree, is refused rather than taken for no fleet's.

A path is judged where it lands: made absolute from the CLI's working directory, then resolved
(`..`, symlinks) as the kernel would; `~` is judged both as the home directory and as a
directory of that name, since the CLIs differ. Inside the agent's own worktree the zone decides,
with the same words as the commit hook; the fleet's configuration, hooks and the agent CLIs'
settings are never writable there. Outside it, every other worktree of the repository (the main
one, other agents', the person's own), the git directory, the agent CLIs' and git's settings in
the home directory and git-fleet's own code are refused whatever the zone says; the rest
(temporary files) is allowed.
"""

from __future__ import annotations

import os

from . import check
from .errors import FleetError
from .gateway import plumbing

# in the home directory: where an agent could switch hooks off for every session of its person
HOME_SETTINGS = (".claude", ".claude.json", ".gemini", ".codex", ".gitconfig", ".config/git")
# git-fleet's own code, which the hooks run
PACKAGE = os.path.dirname(os.path.realpath(__file__))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _top_of(start: str) -> str | None:
    top = os.path.abspath(start)
    while not os.path.exists(os.path.join(top, ".git")):
        parent = os.path.dirname(top)
        if parent == top:
            return None
        top = parent
    return top


class Place:
    """An agent's worktree, as the hook finds it: where git keeps it and whose it is."""

    __slots__ = ("agent", "common_dir", "compiled", "main", "top")

    def __init__(self, top: str, common_dir: str, main: str, compiled: check.Compiled, agent: check.CompiledAgent):
        self.top = os.path.realpath(top)
        self.common_dir = common_dir
        self.main = main
        self.compiled = compiled
        self.agent = agent

    @classmethod
    def find(cls, start: str, fleet: tuple[str, str] | None = None) -> Place | None:
        """The agent's worktree that holds `start` (a directory): found from its `.git`, else
        (moved away) by where the fleet keeps it. None where no agent works: the main worktree,
        a worktree of the person's, outside the repository. `fleet` is what the hook was
        installed for, (common dir, main worktree): with it, a linked worktree whose fleet's
        configuration is gone is an error (refused), not taken for no fleet's."""
        top = _top_of(start)
        found = plumbing.layout_at(top) if top else None
        if fleet is None:
            if found is None:
                return None
            common_dir, main_or_none = found[0], plumbing.main_worktree_of(found[0])
            if main_or_none is None:
                return None
            main = main_or_none
        else:
            common_dir, main = fleet
            if found is not None and os.path.realpath(found[0]) != os.path.realpath(common_dir):
                found = None  # another repository's worktree, inside this one's reach
        here = os.path.realpath(start)
        if found is not None and os.path.realpath(found[2]) == os.path.realpath(main):
            return None  # the orchestrator's own worktree
        compiled = check.load_compiled(common_dir, main)
        if compiled is None:
            # no zones to judge by: refused in a linked worktree of the fleet's repository, where
            # an agent may work (its configuration stashed, say); elsewhere nothing is the fleet's
            if fleet is None or not (found or any(_inside(here, w) for w in plumbing.linked_worktrees(common_dir))):
                return None
            raise FleetError(f"the fleet's configuration is gone from {main}, so no edit can be checked",
                             f"restore {os.path.join(main, check.CONFIG_NAME)} (git stash pop, git checkout); "
                             "to end the fleet: git fleet-init --uninstall")
        agent = compiled.agent_for(plumbing.head_ref(found[1]), found[2]) if found else None
        if agent is None:  # (its .git moved away, say: the worktree is still where the fleet put it)
            agent = next((a for a in compiled.agents.values()
                          if a.worktree and _inside(here, os.path.realpath(a.worktree))), None)
        if agent is None:
            return None  # the person's own worktree, or outside the repository: no agent's
        return cls(agent.worktree if found is None else found[2], common_dir, main, compiled, agent)

    def judge(self, path: str, cwd: str, what: str = "write to") -> FleetError | None:
        """Why the agent may not write `path` (relative to `cwd`), or None if it may. A path
        that starts with `~` is judged both ways: as the home directory and as a directory
        named `~` (Claude Code expands it, Gemini CLI and Codex do not)."""
        readings = [os.path.join(cwd, path)]
        if path.startswith("~"):
            readings.append(os.path.join(cwd, os.path.expanduser(path)))
        for reading in readings:
            refusal = self._judge(os.path.realpath(reading), what)
            if refusal is not None:
                return refusal
        return None

    def _judge(self, real: str, what: str) -> FleetError | None:
        if _inside(real, self.top):
            rel = real[len(self.top) + 1:]
            return self._in_zone(rel, what) if rel else self._refuse(real, "is the top of your worktree, not a file")
        return self.foreign(real)

    def foreign(self, real: str) -> FleetError | None:
        """Why `real` (resolved, outside the agent's worktree) is no place for it to write."""
        for other in self.compiled.agents.values():
            if other is not self.agent and other.worktree and _inside(real, os.path.realpath(other.worktree)):
                return self._refuse(real, f"is in the worktree of agent '{other.name}'",
                                    f"leave changes to its paths to '{other.name}'")
        if _inside(real, os.path.realpath(self.common_dir)):
            return self._refuse(real, "is in the repository's git directory (its hooks, config and refs)",
                                "only git, run in your worktree, writes there")
        if _inside(real, os.path.realpath(self.main)):
            return self._refuse(real, "is in the main worktree, the orchestrator's")
        if any(_inside(real, w) for w in plumbing.linked_worktrees(self.common_dir)):
            return self._refuse(real, "is in another worktree of this repository")
        home = os.path.expanduser("~")
        if home != "~" and any(_inside(real, os.path.realpath(os.path.join(home, s))) for s in HOME_SETTINGS):
            return self._refuse(real, "is an agent CLI's or git's own settings, which can switch the fleet's hooks off")
        if _inside(real, PACKAGE):
            return self._refuse(real, "is git-fleet's own code, which the fleet's hooks run")
        return None

    def _in_zone(self, rel: str, what: str) -> FleetError | None:
        violations = check.check_paths(self.compiled, self.agent, [(what, rel)])
        return check.describe(self.agent, violations, "edit refused", edit=True) if violations else None

    def _refuse(self, path: str, why: str, hint: str | None = None) -> FleetError:
        return FleetError(f"edit refused: {check.quote(path)} {why}; agent '{self.agent.name}' works in {self.top}",
                          "\n".join(filter(None, [
                              f"zone of '{self.agent.name}': " + "  ".join(self.agent.zone), hint,
                              "for anything else ask the orchestrator: a task for it, or a wider zone set "
                              "from the main worktree"])))
