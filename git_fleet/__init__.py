"""git-fleet: a fleet of coding agents on one repository, each in its own worktree and zone."""

__version__ = "0.1.0"
