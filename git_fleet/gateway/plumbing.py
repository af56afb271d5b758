"""git's own plumbing, run as subprocesses: the half of the git gateway that the hooks use.

The commit hook runs on every commit of every agent, so this module imports only what a
bare Python start has at hand (os, subprocess): no pathlib, dataclasses or typing at run
time. repo.py builds the rest of the gateway (pygit2, worktrees) on top of it.
"""

from __future__ import annotations

import os

from ..errors import FleetError, GitError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterable, Sequence

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
ZERO_OID = "0" * 40


INHERITED: list[int] = []

# git-fleet reads the repository's real objects: never a replacement (`git replace`, refs/replace/*,
# which anyone who can push or write refs makes), which would show a gate one commit's parents or
# tree and merge another's. (A graft file is a file in the common dir, like the hooks: a server's
# cannot be pushed, and a local one is the sandbox's to keep out.)
_REAL_OBJECTS = {"GIT_NO_REPLACE_OBJECTS": "1"}


def git_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a git process git-fleet runs: `env` (else this process's), real objects."""
    return {**(os.environ if env is None else env), **_REAL_OBJECTS}


class inherit:  # noqa: N801 (used as a context manager, like a function)
    """Within the block every git process started here inherits `fd`: a lock held on it (the
    fleet's lock, a scratch space's) then lasts as long as the git processes a command started,
    also when the command itself is killed first."""

    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self) -> None:
        INHERITED.append(self.fd)

    def __exit__(self, *_exc: object) -> None:
        INHERITED.remove(self.fd)


def git(args: Sequence[str], cwd: str | os.PathLike[str] | None = None, *, input: bytes | None = None,
        env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run git; raise GitError naming the command and git's own message when it fails."""
    import subprocess

    try:
        proc = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, env=git_env(env),
                              pass_fds=tuple(INHERITED))
    except FileNotFoundError:
        if cwd is not None and not os.path.isdir(cwd):
            raise FleetError(f"{cwd} does not exist", "its worktree may have been moved or removed by hand: "
                             "git worktree list, git worktree repair") from None
        raise FleetError("git is not installed or not on PATH", "install git 2.38 or newer") from None
    if check and proc.returncode != 0:
        said = proc.stderr.decode("utf-8", "replace").strip().replace("fatal: ", "").replace("error: ", "")
        raise GitError(f"'git {' '.join(args[:3])}' failed: {said or 'exit ' + str(proc.returncode)}")
    return proc


def quick(args: Sequence[str], show_errors: bool = True) -> tuple[int, bytes]:
    """Run git for its output, without importing subprocess (~4 ms the commit hook need not pay).

    stderr goes where the hook's stderr goes, or to /dev/null.
    """
    read_end, write_end = os.pipe()
    actions: list[tuple[object, ...]] = [(os.POSIX_SPAWN_DUP2, write_end, 1), (os.POSIX_SPAWN_CLOSE, read_end)]
    if not show_errors:
        actions.append((os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0))
    try:
        pid = os.posix_spawnp("git", ["git", *args], git_env(), file_actions=actions)
    except FileNotFoundError:
        os.close(read_end)
        raise FleetError("git is not installed or not on PATH", "install git 2.38 or newer") from None
    finally:
        os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as fh:
        while chunk := fh.read(1 << 16):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)


def out(args: Sequence[str], cwd: str | os.PathLike[str] | None = None, check: bool = True,
        input: bytes | None = None, env: dict[str, str] | None = None) -> str:
    return git(args, cwd, check=check, input=input, env=env).stdout.decode("utf-8", "surrogateescape").rstrip("\n")


def parse_worktree_list(raw: bytes) -> list[dict[str, str]]:
    """`git worktree list --porcelain -z` as one dict per worktree (keys as git names them)."""
    trees = []
    for block in raw.split(b"\0\0"):
        fields: dict[str, str] = {}
        for item in block.split(b"\0"):
            if item:
                key, _, value = item.decode("utf-8", "surrogateescape").partition(" ")
                fields[key] = value
        if "worktree" in fields:
            trees.append(fields)
    return trees


def worktree_list(cwd: str | os.PathLike[str]) -> list[dict[str, str]]:
    return parse_worktree_list(git(["worktree", "list", "--porcelain", "-z"], cwd).stdout)


REGISTERED = "fleet-agent"  # git config fleet-agent.<name>.worktree: where this clone keeps agent <name>'s worktree


def local_settings(common_dir: str) -> tuple[str | None, dict[str, str]]:
    """core.hooksPath, and the agents' worktrees this clone registered (name -> path), in one
    `git config` run. A registration counts only from the repository's own config file (the
    one the zone cache's key covers): never from `git -c`, GIT_CONFIG_* or a worktree's config,
    which whoever runs git sets as they like."""
    raw = git(["config", "--null", "--show-scope", "--get-regexp", rf"^(core\.hookspath|{REGISTERED}\..*\.worktree)$"],
              common_dir, check=False).stdout.decode("utf-8", "surrogateescape")
    hooks_path, registered = None, {}
    items = raw.split("\0")
    for scope, item in zip(items[0::2], items[1::2], strict=False):
        key, _, value = item.partition("\n")
        if key.lower() == "core.hookspath":
            hooks_path = value.strip()
        elif scope == "local" and key.startswith(REGISTERED + ".") and key.endswith(".worktree"):
            registered[key[len(REGISTERED) + 1 : -len(".worktree")]] = value
    return hooks_path, registered


class Here:
    """Where a hook runs: enough to decide whose zone applies."""

    __slots__ = ("common_dir", "git_dir", "head_ref", "toplevel")

    def __init__(self, common_dir: str, git_dir: str, toplevel: str | None, head_ref: str | None):
        self.common_dir = common_dir
        self.git_dir = git_dir
        self.toplevel = toplevel
        self.head_ref = head_ref  # "refs/heads/x", or None when detached


def read_file(path: str) -> str | None:
    """A small file's text (a git dir's HEAD, a .git file), stripped; None where it cannot be read,
    or is no regular file (a FIFO would keep the reader waiting, /dev/zero would never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_mode & 0o170000 != 0o100000:  # (S_ISREG, without importing stat)
            return None
        return os.read(fd, 1 << 16).decode("utf-8", "surrogateescape").strip()
    except OSError:
        return None
    finally:
        os.close(fd)


def _here_from_layout() -> tuple[str, str, str] | None:
    """(common dir, git dir, top) read from the `.git` of the current directory, as hooks run
    at the top of the worktree (gitrepository-layout(5)); None when anything is unusual."""
    if "GIT_DIR" in os.environ or "GIT_COMMON_DIR" in os.environ or "GIT_WORK_TREE" in os.environ:
        return None
    return layout_at(os.getcwd())


def layout_at(top: str) -> tuple[str, str, str] | None:
    """(common dir, git dir, top) of the work tree whose top is `top`, read from its `.git`
    without starting git; None when `top` has none, or anything is unusual."""
    dotgit = os.path.join(top, ".git")
    if os.path.isdir(dotgit):
        git_dir = dotgit
    else:
        link = read_file(dotgit)
        if not link or not link.startswith("gitdir: "):
            return None
        git_dir = os.path.normpath(os.path.join(top, link[8:]))
    common = read_file(os.path.join(git_dir, "commondir"))
    common_dir = os.path.normpath(os.path.join(git_dir, common)) if common else git_dir
    if not os.path.isfile(os.path.join(common_dir, "HEAD")):
        return None
    return common_dir, git_dir, top


def here() -> Here:
    found = _here_from_layout()
    if found is None:
        # (in a bare repository, a server's, --show-toplevel fails after printing the rest)
        _, raw = quick(["rev-parse", "--path-format=absolute", "--git-common-dir", "--git-dir", "--show-toplevel"],
                       show_errors=False)
        lines = raw.decode("utf-8", "surrogateescape").splitlines()
        if len(lines) < 2:
            raise UsageError(f"not a git repository: {os.getcwd()}", "run this inside a repository")
        found = (lines[0], lines[1], lines[2] if len(lines) > 2 else None)  # type: ignore[assignment]
    common_dir, git_dir, top = found  # type: ignore[misc]
    return Here(common_dir, git_dir, top, head_ref(git_dir))


def head_ref(git_dir: str) -> str | None:
    """The branch (full ref) a work tree has checked out, or is rebasing; None when detached."""
    head = read_file(os.path.join(git_dir, "HEAD")) or ""
    return head[5:] if head.startswith("ref: ") else rebasing(git_dir)


def rebasing(git_dir: str) -> str | None:
    """The branch (full ref) a worktree with a detached HEAD is in the middle of rebasing: still
    the branch it works on, and checked out there as far as git is concerned."""
    for name in ("rebase-merge/head-name", "rebase-apply/head-name"):
        ref = read_file(os.path.join(git_dir, name))
        if ref and ref.startswith("refs/heads/"):
            return ref
    return None


MAIN_RECORD = os.path.join("fleet", "main-worktree")


def main_worktree_of(common_dir: str) -> str | None:
    """The main worktree from the common dir: `<top>/.git` is the usual case. A git dir kept
    elsewhere (`git init --separate-git-dir`, `core.worktree`) does not say where its work tree
    is, and `git worktree list` names the git dir itself then; `git fleet-init`, run in the main
    worktree, records it in <common dir>/fleet/main-worktree. None for a bare repository."""
    if os.path.basename(common_dir) == ".git" and os.path.isdir(common_dir):
        return os.path.dirname(common_dir)
    recorded = read_file(os.path.join(common_dir, MAIN_RECORD))
    if recorded and os.path.isdir(recorded):
        return recorded
    first = worktree_list(common_dir)[0]
    if "bare" in first:
        return None
    if os.path.realpath(first["worktree"]) != os.path.realpath(common_dir):
        return first["worktree"]
    configured = git(["config", "--get", "core.worktree"], common_dir, check=False).stdout.decode().strip()
    return os.path.normpath(os.path.join(common_dir, configured)) if configured else None


def server_base(common_dir: str) -> str:
    """The base branch of a bare repository (a server's): fleet.base, else what HEAD names."""
    base = out(["config", "--get", "fleet.base"], common_dir, check=False)
    if not base:
        head = out(["symbolic-ref", "-q", "HEAD"], common_dir, check=False)
        base = head.removeprefix("refs/heads/") or "main"
    return base


def parse_name_status(raw: bytes) -> list[tuple[str, tuple[str, ...]]]:
    """(status letter, paths) pairs of `--name-status -z`: two paths for a rename or copy."""
    items = raw.split(b"\0")
    changes = []
    i = 0
    while i < len(items) and items[i]:
        status = items[i].decode()[:1]
        n = 2 if status in "RC" else 1
        changes.append((status, tuple(p.decode("utf-8", "surrogateescape") for p in items[i + 1 : i + 1 + n])))
        i += 1 + n
    return changes


def staged_changes(against: str = "HEAD") -> list[tuple[str, tuple[str, ...]]]:
    """What the commit being made changes, from the index git names in GIT_INDEX_FILE: against
    HEAD (renames found), or against a given tree (renames not followed)."""
    args = ["diff-index", "--cached", "-z", "--name-status", "-M" if against == "HEAD" else "--no-renames",
            "--no-ext-diff", "--ignore-submodules=none"]
    if against != "HEAD":
        code, raw = quick([*args, against])
        if code != 0:
            raise GitError("'git diff-index --cached' failed")
        return parse_name_status(raw)
    code, raw = quick([*args, "HEAD"], show_errors=False)
    if code != 0:
        if quick(["rev-parse", "-q", "--verify", "HEAD^{commit}"], show_errors=False)[0] == 0:
            code, raw = quick([*args, "HEAD"])  # a real failure: let git say why
            raise GitError("'git diff-index --cached HEAD' failed")
        code, raw = quick([*args, EMPTY_TREE])  # no commit yet: everything staged is new
        if code != 0:
            raise GitError("'git diff-index --cached' failed")
    return parse_name_status(raw)


# A merge git-fleet makes or re-makes is git's default merge, whatever the repository's config says
# (an agent could set merge.directoryRenames to carry a new file of its zone into another's).
MERGE_PINNED = ("-c", "merge.renames=true", "-c", "merge.directoryRenames=conflict", "-c", "merge.renormalize=false")

# What a zone check reads from `git log` must not depend on the repository's config (which an
# agent may write): a root commit's files are shown (log.showRoot), gitlinks too
# (diff.ignoreSubmodules), paths are whole (diff.relative), no colour or signature lines, and a
# merge is re-made as git's default merge would make it (merge.renames).
PINNED = ("-c", "log.showRoot=true", "-c", "diff.ignoreSubmodules=none", "-c", "diff.relative=false",
          "-c", "color.ui=never", "-c", "log.showSignature=false", *MERGE_PINNED)


def history(tips: Iterable[str], exclude: Iterable[str], cwd: str | os.PathLike[str]
            ) -> dict[str, tuple[list[str], list[str]]]:
    """commit -> (its parents, the paths it changes) for each commit reachable from `tips` and not
    from `exclude`, in one `git log`. A commit changes the paths where it differs from its parent
    (a root commit: all its paths). A merge changes the paths where it differs from the merge git
    itself would make of its two parents (`--remerge-diff`): what it brings in from a parent was
    checked on that parent's side, or is approved (excluded); an edit made in the merge, taking a
    path back to an older version from an approved parent included, is its own. An octopus merge,
    which git does not re-make, changes every path where it differs from its first parent."""
    tips = list(tips)
    if not tips:
        return {}
    args = [*PINNED, "log", "-z", "--no-renames", "--name-only", "--remerge-diff", "--root", "--ignore-submodules=none",
            "--no-relative", "--no-color", "--no-show-signature", "--format=%x01%H %P", *tips, "--not", *exclude, "--"]
    raw = git(args, cwd).stdout
    graph: dict[str, tuple[list[str], list[str]]] = {}
    for chunk in raw.split(b"\x01")[1:]:
        # "<hash> <parents>\0" then, if it changed anything, "\n<path>\0<path>\0..."
        head, _, rest = chunk.partition(b"\0")
        rest = rest[1:] if rest.startswith(b"\n") else rest
        ids = head.decode().split()
        graph[ids[0]] = (ids[1:], [p.decode("utf-8", "surrogateescape") for p in rest.split(b"\0") if p])
    for commit, (parents, _paths) in graph.items():
        if len(parents) > 2:
            graph[commit] = (parents, changed_paths(parents[0], commit, cwd))
    return graph


def is_ancestor(a: str, b: str, cwd: str | os.PathLike[str]) -> bool:
    return git(["merge-base", "--is-ancestor", a, b], cwd, check=False).returncode == 0


def changed_paths(a: str, b: str, cwd: str | os.PathLike[str]) -> list[str]:
    """The paths where two commits differ (renames not followed, gitlinks included)."""
    raw = git(["diff-tree", "-r", "-z", "--no-renames", "--name-only", "--ignore-submodules=none", "--no-relative",
               a, b], cwd).stdout
    return [p.decode("utf-8", "surrogateescape") for p in raw.split(b"\0") if p]


def remerged(ours: str, theirs: str) -> str:
    """The tree git's own merge of two commits makes (with conflict markers where it conflicts)."""
    code, raw = quick([*PINNED, "merge-tree", "--write-tree", "--no-messages", ours, theirs], show_errors=False)
    tree = raw.split(b"\n", 1)[0].decode().strip()
    if code not in (0, 1) or len(tree) not in (40, 64):
        raise GitError(f"'git merge-tree {ours} {theirs}' failed")
    return tree


def commits_by_tip(tips: dict[str, str], exclude: Iterable[str], cwd: str | os.PathLike[str]
                   ) -> dict[str, list[tuple[str, list[str]]]]:
    """commits_touching for several tips at once, in one `git log` (history): for each key of
    `tips`, the commits reachable from its tip and not from `exclude`, found by walking parents."""
    graph = history(set(tips.values()), exclude, cwd)
    result = {}
    for key, tip in tips.items():
        seen: list[str] = []
        stack = [tip]
        visited = set()
        while stack:
            c = stack.pop()
            if c in graph and c not in visited:
                visited.add(c)
                seen.append(c)
                stack.extend(graph[c][0])
        result[key] = [(c, graph[c][1]) for c in seen]
    return result


def commits_touching(tips: Iterable[str], exclude: Iterable[str], cwd: str | os.PathLike[str]
                     ) -> list[tuple[str, list[str]]]:
    """(commit, paths it changes, as `history` says) for each commit reachable from `tips` and not
    from `exclude`."""
    return [(c, paths) for c, (_parents, paths) in history(tips, exclude, cwd).items()]


def linked_worktrees(common_dir: str) -> dict[str, str]:
    """The linked worktrees the repository records, read without git: {the worktree's top (its
    real path): its git dir, $GIT_COMMON_DIR/worktrees/ID}. From the repository's side only:
    the `.git` file in a worktree is whatever its user last wrote there."""
    records = os.path.join(common_dir, "worktrees")
    try:
        names = os.listdir(records)
    except OSError:
        return {}
    found = {}
    for name in names:
        gitdir = read_file(os.path.join(records, name, "gitdir"))
        if gitdir:
            found[os.path.dirname(os.path.realpath(gitdir))] = os.path.join(records, name)
    return found
