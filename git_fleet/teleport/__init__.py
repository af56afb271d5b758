"""Teleport: an agent's whole state through an ordinary git remote, and back.

A snapshot is one commit, shaped the way `git stash` shapes its entries, so git's own tools
understand it too (`git stash apply --index SNAPSHOT` works in any worktree):

    snapshot      tree: the work tree's tracked files as they are on disk
    ├─ parent 1   the agent's branch tip
    ├─ parent 2   tree: the index (staged changes), parent: the branch tip
    └─ parent 3   tree: the untracked, not ignored files (only if there are any)

snapshot.py makes the trees and writes them back, byte for byte. The message carries the agent's
settings and claimed tasks as JSON. It is pushed to refs/fleet/teleport/AGENT on the remote; the
same ref here remembers the snapshot this clone last sent or received, which is how a pull knows
whether the local worktree moved on since. What a forced pull replaces is kept, every time, at
refs/fleet/backups/AGENT/N.

commit.py    the snapshot commit: captured (or refused), written, read, counted; its metadata
remote.py    the remote: which one, what is parked there, fetch, push with a lease, backups here
push.py      git fleet-teleport push and list
pull.py      git fleet-teleport pull
"""

from .commit import FORMAT, Outcome
from .pull import pull_agent
from .push import parked, push_agent

__all__ = ["FORMAT", "Outcome", "parked", "pull_agent", "push_agent"]
