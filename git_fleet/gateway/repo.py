"""The git gateway's Repo, with plumbing.py: nothing else in git-fleet reaches git.

git's own plumbing is used where it is fastest (merges and forecasts through merge-tree,
worktrees, status); pygit2 reads refs and objects in-process. pygit2 is imported only when first
needed, so the commit hook never pays for it.

Repo is one object for the repository, built in layers, each a module of its own and each using
only the layers below it: base.py (identity and config) <- refs.py (refs, objects, merges in
memory) <- worktrees.py <- worktree_moves.py (a work tree following its branch) <- Repo (finding
the repository, and this clone's records of agents' worktrees). A caller sees one Repo; a reader
sees one idea per file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from . import plumbing
from .plumbing import (
    EMPTY_TREE,
    ZERO_OID,
    git,
    out,
)

if TYPE_CHECKING:
    pass
from .worktree_moves import WorkTreeMoves
from .worktrees import Worktree

__all__ = ["EMPTY_TREE", "ZERO_OID", "Repo", "Worktree", "git", "out"]


class Repo(WorkTreeMoves):
    """A repository seen from one of its worktrees (or from a bare repository)."""

    @classmethod
    def discover(cls, cwd: str | os.PathLike[str] | None = None) -> Repo:
        proc = git(["rev-parse", "--path-format=absolute", "--git-common-dir", "--git-dir",
                    "--is-bare-repository", "--show-object-format", "--show-toplevel"], cwd, check=False)
        lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines()
        if len(lines) < 4:
            where = Path(cwd or os.getcwd())
            said = proc.stderr.decode("utf-8", "replace")
            if "safe.directory" in said:  # owned by another user: git's own words say how to trust it
                first = said.strip().splitlines()[0].removeprefix("fatal: ")
                advice = [line.strip() for line in said.splitlines() if "git config --global" in line]
                raise UsageError(f"{first} ({where})", advice[0] if advice else "see `git help config`: safe.directory")
            raise UsageError(f"not a git repository: {where}", "run git-fleet inside a git repository")
        if lines[3] != "sha1":
            raise UsageError(f"{lines[0]}: git-fleet does not work with {lines[3].upper()} repositories yet",
                             "it needs a repository with SHA-1 object names, git's default "
                             "(the library it reads objects with cannot open others)")
        bare = lines[2] == "true"
        top = Path(lines[4]) if len(lines) > 4 and not bare else None
        if top is None and not bare:
            raise UsageError("this command needs a work tree", "run it in the repository's main worktree")
        return cls(Path(lines[0]), Path(lines[1]), top, bare)

    def register_worktree(self, agent: str, path: Path | None) -> None:
        """Record (None: forget) where this clone keeps an agent's worktree: per clone, so in the
        repository's own config, never in the committed .gitfleet.toml."""
        if path is None:
            git(["config", "--local", "--remove-section", f"{plumbing.REGISTERED}.{agent}"], self.common_dir, check=False)
        else:
            git(["config", "--local", f"{plumbing.REGISTERED}.{agent}.worktree", str(path)], self.common_dir)

    def registered_worktrees(self) -> dict[str, Path]:
        return {name: Path(p) for name, p in plumbing.local_settings(str(self.common_dir))[1].items()}
