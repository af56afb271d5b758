"""The environments git runs with on a worktree: for a command that runs there (an agent's, a
checkpoint's test), and for the git the fleet itself runs on it, whose git dir comes from the
repository's own record of the worktree and never from the `.git` file in it; and where the
main worktree is."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from .plumbing import linked_worktrees, main_worktree_of
from .refs import Refs

LOCATING = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")


class Environments(Refs):
    def env_in(self, worktree: Path) -> dict[str, str]:
        """The environment for a command that runs in `worktree` (an agent's, a checkpoint's
        test): the variables that would take it to another worktree are dropped (see LOCATING),
        and set where git cannot find the repository from the work tree itself (a core.worktree
        main worktree has no .git)."""
        env = {k: v for k, v in os.environ.items() if k not in LOCATING}
        if worktree == self.main_worktree and not os.path.lexists(worktree / ".git"):
            env.update(GIT_DIR=str(self.common_dir), GIT_WORK_TREE=str(worktree))
        return env

    def env_for(self, worktree: Path) -> dict[str, str]:
        """The environment for git that the fleet runs on `worktree` (status, a snapshot, a move):
        its git dir taken from the repository's own record of it, never from the `.git` file in
        it (an agent can point that at a git dir of its making), and the configuration that runs
        commands as git works (fsmonitor, hooks) switched off."""
        env = self.env_in(worktree)
        admin = self.admin_dir(worktree)
        if admin is not None:  # (and its common dir: the `commondir` file in it is writable from the worktree too)
            env.update(GIT_DIR=str(admin), GIT_WORK_TREE=str(worktree), GIT_COMMON_DIR=str(self.common_dir))
        # fsmonitor off; the hooks the repository's own config names (a worktree's config can
        # name others), so the fleet's and the person's hooks still run
        hooks = self.own_hooks_path
        count = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
        for i, (key, value) in enumerate((("core.fsmonitor", "false"), ("core.hooksPath", hooks)), count):
            env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
        env["GIT_CONFIG_COUNT"] = str(count + 2)
        return env

    @contextmanager
    def acting_on(self, worktree: Path) -> Iterator[None]:
        """Within the block, every git this process starts works on `worktree` as env_for says
        (for code that runs many git commands there with the process's own environment: a
        teleport's snapshot)."""
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env_for(worktree))
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)

    @cached_property
    def own_hooks_path(self) -> str:
        """Where the repository's own configuration has git look for hooks."""
        return self.config_get("core.hooksPath") or str(self.common_dir / "hooks")

    def confined(self, worktree: Path) -> bool:
        """Whether an agent ran sandboxed in `worktree` (sandbox_layout.confine left its mark, where
        no agent writes): git the fleet runs there then never looks inside a submodule, whose
        configuration (a filter, say) is the agent's."""
        marks = self.common_dir / "fleet" / "sandboxed"
        if not marks.is_dir():
            return False  # (no agent of this repository ever ran sandboxed: no worktree list to read)
        admin = self.admin_dir(worktree)
        return admin is not None and (marks / admin.name).exists()

    def admin_dir(self, worktree: Path) -> Path | None:
        """The git dir the repository keeps for a linked worktree; None for the main worktree
        or one it does not know."""
        found = linked_worktrees(str(self.common_dir)).get(os.path.realpath(worktree))
        return Path(found) if found else None

    @cached_property
    def main_worktree(self) -> Path | None:
        """The main worktree, where the orchestrator works; None for a bare repository (see
        plumbing.main_worktree_of for a git dir kept apart from its work tree)."""
        if self.toplevel is not None and self.git_dir == self.common_dir:
            return self.toplevel  # this is it: the main worktree's git dir is the common dir
        found = main_worktree_of(str(self.common_dir))
        return Path(found) if found else None

