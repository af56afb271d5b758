"""The zone check at the edit: whether an agent CLI may write a file, decided before it does.

An agent CLI's hook (agent_hook.py) asks it for every Write or Edit of every agent, so it starts
no git and imports what the commit hook does: the worktree is found from its `.git` file, the
zones from the compiled cache (check.py). A path is judged where it lands: made absolute from
the CLI's working directory, then resolved (`..`, symlinks) as the kernel would. Inside the
agent's own worktree the zone decides, with the same words as the commit hook; the fleet's
configuration, hooks and the agent CLIs' settings are never writable there. Outside it, the main
worktree, the other agents' worktrees, the git directory and the CLIs' and git's own settings in
the home directory are refused whatever the zone says; the rest (temporary files) is allowed.
"""

from __future__ import annotations

import os

from . import check
from .errors import FleetError
from .gateway import plumbing

# in the home directory: where an agent could switch hooks off for every session of its person
HOME_SETTINGS = (".claude", ".claude.json", ".gemini", ".codex", ".gitconfig", ".config/git")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class Place:
    """An agent's worktree, as the hook finds it: where git keeps it and whose it is."""

    __slots__ = ("agent", "common_dir", "compiled", "git_dir", "main", "top")

    def __init__(self, top: str, git_dir: str, common_dir: str, main: str, compiled: check.Compiled,
                 agent: check.CompiledAgent):
        self.top = os.path.realpath(top)
        self.git_dir = git_dir
        self.common_dir = common_dir
        self.main = main
        self.compiled = compiled
        self.agent = agent

    @classmethod
    def find(cls, start: str) -> Place | None:
        """The agent's worktree that holds `start` (a directory); None where no agent of a fleet
        works (outside a repository, the main worktree, a worktree that is no agent's)."""
        top = os.path.abspath(start)
        while True:
            if os.path.exists(os.path.join(top, ".git")):
                break
            parent = os.path.dirname(top)
            if parent == top:
                return None
            top = parent
        found = plumbing.layout_at(top)
        if found is None:
            return None
        common_dir, git_dir, top = found
        main = plumbing.main_worktree_of(common_dir)
        if main is None or os.path.realpath(main) == os.path.realpath(top):
            return None
        compiled = check.load_compiled(common_dir, main)
        agent = compiled.agent_for(plumbing.head_ref(git_dir), top) if compiled else None
        if compiled is None or agent is None:
            return None
        return cls(top, git_dir, common_dir, main, compiled, agent)

    def judge(self, path: str, cwd: str, what: str = "write to") -> FleetError | None:
        """Why the agent may not write `path` (relative to `cwd`), or None if it may."""
        real = os.path.realpath(os.path.join(cwd, os.path.expanduser(path)))
        if _inside(real, self.top):
            rel = real[len(self.top) + 1:]
            return self._in_zone(rel, what) if rel else self._refuse(real, "is the top of your worktree, not a file")
        for other in self.compiled.agents.values():
            if other is not self.agent and other.worktree and _inside(real, os.path.realpath(other.worktree)):
                return self._refuse(real, f"is in agent '{other.name}''s worktree",
                                    f"leave changes to its paths to '{other.name}'")
        if _inside(real, os.path.realpath(self.common_dir)):
            return self._refuse(real, "is in the repository's git directory (its hooks, config and refs)",
                                "only git, run in your worktree, writes there")
        if _inside(real, os.path.realpath(self.main)):
            return self._refuse(real, "is in the main worktree, the orchestrator's")
        home = os.path.expanduser("~")
        if home != "~" and any(_inside(real, os.path.realpath(os.path.join(home, s))) for s in HOME_SETTINGS):
            return self._refuse(real, "is an agent CLI's or git's own settings, which can switch the fleet's hooks off")
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
