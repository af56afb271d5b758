"""The repository's identity (its git dir, common dir and work tree) and its own config: the
first layer of Repo (repo.py says why Repo is built in layers)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .plumbing import (
    git,
)

if TYPE_CHECKING:
    pass


class RepoBase:
    """A repository seen from one of its worktrees (or from a bare repository)."""

    def __init__(self, common_dir: Path, git_dir: Path, toplevel: Path | None, bare: bool):
        self.common_dir = common_dir
        self.git_dir = git_dir
        self.toplevel = toplevel
        self.bare = bare

    def config_get(self, key: str) -> str | None:
        proc = git(["config", "--get", key], self.common_dir, check=False)
        return proc.stdout.decode("utf-8", "surrogateescape").strip() if proc.returncode == 0 else None

    def config_set(self, key: str, value: str | None) -> None:
        """Set a key in this repository's own config (None: unset it)."""
        if value is None:
            git(["config", "--local", "--unset-all", key], self.common_dir, check=False)
        else:
            git(["config", "--local", key, value], self.common_dir)

    def config_origin(self, key: str) -> str | None:
        proc = git(["config", "--show-scope", "--get", key], self.common_dir, check=False)
        return proc.stdout.decode().split("\t", 1)[0] if proc.returncode == 0 else None
