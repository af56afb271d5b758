"""The git gateway: the only code that starts git or opens the repository.

Two halves, for two kinds of callers:
- plumbing.py: git's plumbing as subprocesses, light enough for the commit hook's warm path
  (no pygit2, no click, no TOML reader imported);
- repo.py: Repo, for every command: pygit2 where it reads faster, git's plumbing where that is
  faster (measured: see bench/README.md), worktrees, branches, merges in memory.
"""
