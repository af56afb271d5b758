"""git-fleet-check: the zone check that the hooks run.

This entry point is on every commit's path, so it imports neither click nor pygit2 nor a TOML
parser when the compiled zones are current (see check.py). Usage:

    git fleet-check [--hook pre-commit]          the staged change of this worktree
    git fleet-check --hook pre-push REMOTE URL   ref lines on stdin, as git gives them
    git fleet-check --hook pre-receive           ref lines on stdin (server side)
    git fleet-check --hook post-commit           a fleet across machines: an agent's commit published
    git fleet-check --commits [AGENT...]         every commit on the agents' branches since the base
"""

from __future__ import annotations

import os
import sys

from . import check, pause
from .errors import INTERNAL, FleetError, UsageError
from .gateway import plumbing

USAGE = ("usage: git fleet-check [--hook pre-commit | --hook pre-merge-commit | --hook pre-push REMOTE URL | "
         "--hook pre-receive | --hook post-commit | --commits [AGENT...]]")


def _fleet(here: plumbing.Here) -> check.Compiled | None:
    """The zones, compiled from the configuration itself, never read from the cache (which an
    agent could rewrite, key kept): pushes and merges are not on every commit's path."""
    main = plumbing.main_worktree_of(here.common_dir)
    if main is None:
        return _server_config(here.common_dir)
    compiled = check.load_compiled(here.common_dir, main, cached=False)
    if compiled is None and os.path.exists(os.path.join(here.common_dir, "fleet", "approved.toml")):
        # a fleet whose configuration is gone from the main worktree: a merge that deletes it has
        # already taken it out of the work tree when this hook runs
        raise FleetError(f"{os.path.join(main, check.CONFIG_NAME)} is gone, so nothing can be checked; "
                         "nothing is taken in without it",
                         "if a merge deleted it: git merge --abort; to end the fleet: git fleet-init --uninstall")
    return compiled


def _require_approved(here: plumbing.Here) -> None:
    """A merge or push of an agent's work counts only zones the person approved (approval.py), as
    git fleet-merge does. (A server's zones are its base's committed file: approved by the push.)"""
    from pathlib import Path

    from . import approval, config  # (a merge's or push's path, never a commit's: kept off the warm path)

    main = plumbing.main_worktree_of(here.common_dir)
    if main is None or here.common_dir in _APPROVED:
        return
    common_dir = here.common_dir
    path = Path(main, check.CONFIG_NAME)
    unapproved = approval.check(Path(common_dir), config.parse_bytes(path, path.read_bytes()))
    if unapproved:
        raise unapproved.error("they are not what this is checked against", path, Path(common_dir))
    _APPROVED.add(common_dir)  # (once per hook run, however many refs or heads it checks)


_APPROVED: set[str] = set()


def _server_config(common_dir: str) -> check.Compiled | None:
    """A bare repository has no main worktree: read the base branch's committed config."""
    from . import config  # (a server's path: the commit hook never reads the TOML)

    cfg = config.committed(common_dir, plumbing.server_base(common_dir))
    return check.compile_config(common_dir, None, cfg) if cfg is not None else None


def _refuse_during_merge(here: plumbing.Here) -> None:
    """While a move of the branch being committed to is unfinished (a checkpoint merge, or a sync
    of an agent's branch, whose process was killed after the branch moved, before its work tree
    followed), a commit there would be made from the old tree and undo the move: refuse it until
    a fleet command has finished it (moves.py)."""
    for name in ("move-journal", "merge-journal"):
        journal = os.path.join(here.common_dir, "fleet", name)
        if os.path.exists(journal):
            break
    else:
        return
    import json

    try:
        with open(journal, encoding="utf-8") as fh:
            data = json.load(fh)
        ref, what = data["ref"], data.get("what", "merge")
    except (OSError, ValueError, KeyError, TypeError):
        ref, what = None, "merge"  # unreadable: refuse, to be safe
    if ref is not None and ref != here.head_ref:
        return
    branch = (ref or "this branch").removeprefix("refs/heads/")
    moving = f"a checkpoint merge into {branch}" if what == "merge" else f"a sync of {branch}"
    raise FleetError(f"{moving} is not finished; this commit would undo it",
                     "wait for it to finish; if it was interrupted, any git fleet command in the main worktree "
                     "(git fleet-status) finishes it: then commit")


def pre_commit() -> int:
    here = plumbing.here()
    if here.toplevel is None:
        return 0
    _refuse_during_merge(here)
    merging = plumbing.read_file(os.path.join(here.git_dir, "MERGE_HEAD"))
    if merging is not None:
        pre_merge_commit(here)
    main = plumbing.main_worktree_of(here.common_dir)
    if main is None or os.path.realpath(here.toplevel) == os.path.realpath(main):
        return 0  # the orchestrator's worktree is not restricted
    compiled = check.load_compiled(here.common_dir, main)
    if compiled is None:
        return 0
    agent = compiled.agent_for(here.head_ref, here.toplevel)
    if agent is None:
        return 0
    heads = (merging or "").split()
    if len(heads) == 1:
        # concluding a merge: what it brings in from the other side was checked above (another
        # agent's work, this agent's own, or the base's); the agent's own change in the merge is
        # where the index differs from the merge git makes
        pairs = check.staged_pairs(plumbing.staged_changes(against=plumbing.remerged("HEAD", heads[0])))
    else:
        pairs = check.staged_pairs(plumbing.staged_changes())
    violations = check.check_paths(compiled, agent, pairs)
    if violations:
        raise check.describe(agent, violations, "commit rejected")
    return 0


def pre_merge_commit(here: plumbing.Here | None = None) -> int:
    """A plain `git merge` of an agent's branch: its new commits are held to its zone.

    Also run from pre-commit when a merge is being concluded (after resolving conflicts,
    `git commit` runs pre-commit, not pre-merge-commit). What is merged is an agent's by the name
    it was merged by (a tag or a remote's branch named like the agent's branch included), else by
    being the tip of an agent's branch, else by being in one (the agent committed on since)."""
    if here is None:  # (from pre-commit, which has looked already)
        here = plumbing.here()
        _refuse_during_merge(here)
    heads = (plumbing.read_file(os.path.join(here.git_dir, "MERGE_HEAD")) or "").split()
    action = os.environ.get("GIT_REFLOG_ACTION", "")
    names = action.split()[1:] if action.startswith("merge ") else []
    message = (plumbing.read_file(os.path.join(here.git_dir, "MERGE_MSG")) or "").split("\n", 1)[0]
    names += message.split("'")[1::2]  # Merge branch 'x', Merge tag 'y', Merge branches 'a' and 'b'
    resolved = {}  # name -> the commit git takes it for
    for name in names:
        code, raw = plumbing.quick(["rev-parse", "-q", "--verify", f"{name}^{{commit}}"], show_errors=False)
        if code == 0:
            resolved[name] = raw.decode().strip()
    # pre-merge-commit runs before git writes MERGE_HEAD; git names what it merges here
    heads = heads or list(dict.fromkeys(resolved.values()))
    if not heads:
        return 0
    compiled = _fleet(here)
    if compiled is None:
        return 0
    _, raw = plumbing.quick(["for-each-ref", "--format=%(objectname) %(refname:lstrip=2)", "refs/heads/"])
    tips = dict(line.split(" ", 1)[::-1] for line in raw.decode("utf-8", "surrogateescape").splitlines())
    # what the base has is never an agent's change (merging the base into an agent's branch, or
    # an agent's branch that points into the base)
    approved = ["HEAD", *([f"refs/heads/{compiled.base}"] if compiled.base in tips else [])]
    main = plumbing.main_worktree_of(here.common_dir)
    me = None if here.toplevel is None or main is None or os.path.realpath(here.toplevel) == os.path.realpath(main) \
        else compiled.agent_for(here.head_ref, here.toplevel)
    errors = []
    for head in heads:
        named = [a for a in compiled.agents.values()
                 if any(c == head and (n == a.branch or n.endswith("/" + a.branch)) for n, c in resolved.items())]
        agents = named or [a for a in compiled.agents.values() if tips.get(a.branch) == head]
        every = bool(agents)  # named or at the tip: held to each one's zone
        if not agents:
            _, raw = plumbing.quick(["for-each-ref", "--format=%(refname:lstrip=2)", "--contains", head, "refs/heads/"])
            holding = set(raw.decode("utf-8", "surrogateescape").split("\n"))
            agents = [a for a in compiled.agents.values() if a.branch in holding]
        if not agents and me is not None:
            agents, every = [me], True  # merged into an agent's branch, from no agent's: its own work
        if agents:
            _require_approved(here)
        found = [(a, check.check_range(compiled, a, [head], approved, here.git_dir)) for a in agents]
        bad = [(a, v) for a, v in found if v]
        if bad and (every or len(bad) == len(found)):  # (in several agents' branches: in any one's zone will do)
            agent, violations = bad[0]
            errors.append(check.describe(agent, violations, f"merge of {agent.branch} rejected"))
    if errors:
        raise FleetError("\n".join(e.message for e in errors), errors[0].hint)
    return 0


def _ref_updates(stdin: str, server: bool) -> list[tuple[str, str, str]]:
    """(ref, new, old) for each update line; pre-push lines are `lref lsha rref rsha`."""
    updates = []
    for line in stdin.splitlines():
        parts = line.split()
        if server and len(parts) == 3:
            updates.append((parts[2], parts[1], parts[0]))
        elif not server and len(parts) == 4:
            updates.append((parts[2], parts[1], parts[3]))
    return updates


def pushed(hook: str, args: list[str]) -> int:
    server = hook == "pre-receive"
    here = plumbing.here()
    compiled = _fleet(here)
    updates = _ref_updates(sys.stdin.read(), server)
    if server:
        from . import server_shared  # (not on the commit hook's path)

        shared = server_shared.refusals(updates, here.git_dir) + server_shared.unsigned(updates, here.git_dir)
        if shared and compiled is None:  # (the shared refs' protocol holds without zones too)
            raise FleetError("\n".join(e.message for e in shared), shared[0].hint)
    if compiled is None:
        if server:
            base = plumbing.server_base(here.common_dir)
            print(f"warning: {base}:{check.CONFIG_NAME} is not on this server: zones are not checked here\n"
                  f"hint: commit the fleet's {check.CONFIG_NAME} on {base} and push it", file=sys.stderr)
        return 0
    cwd = here.git_dir
    errors = []
    if server:
        from . import server as rules  # (not on the commit hook's path)

        errors += rules.refusals(compiled, updates, cwd, here.common_dir) + shared
    for ref, new, old in updates:
        if new == plumbing.ZERO_OID or not ref.startswith("refs/heads/"):
            continue
        agent = compiled.agent_by_branch(ref[11:])
        if agent is None:
            continue
        _require_approved(here)
        # only what is approved is left out: what this branch had (checked when it was pushed) and
        # the base, here and, before a push, on the remote as last fetched; never what any other
        # ref has, which would let a commit pushed first to a scratch branch or a tag through
        approved = [old, f"refs/heads/{compiled.base}"]
        if not server and args:
            approved.append(f"refs/remotes/{args[0]}/{compiled.base}")
        exclude = [o for o in approved if o != plumbing.ZERO_OID and _have(cwd, o)]
        violations = check.check_range(compiled, agent, [new], exclude, cwd)
        if violations:
            err = check.describe(agent, violations, f"push of {ref[11:]} rejected")
            where = "the server's" if server else f"{args[0] if args else 'the remote'}'s (as last fetched)"
            err.hint = (f"{err.hint}\ncommits in {where} {compiled.base} are not checked: if those are the base's, "
                        f"push {compiled.base} first")
            errors.append(err)
    if errors:
        raise FleetError("\n".join(e.message for e in errors), "\n".join(dict.fromkeys(
            line for e in errors if e.hint for line in e.hint.splitlines())))
    return 0


def _have(cwd: str, oid: str) -> bool:
    return plumbing.git(["cat-file", "-e", f"{oid}^{{commit}}"], cwd, check=False).returncode == 0


def commits(agents: list[str]) -> int:
    """Check every commit of the named agents (all by default) since the base: the hook-free gate."""
    from . import fleet  # (git fleet-check --commits, a command: the hooks never open the fleet)

    f = fleet.Fleet.here()
    cfg = f.config
    names = agents or sorted(cfg.agents)
    compiled = check.compile_config(str(f.repo.common_dir), str(f.main), cfg)
    bad = []
    for name in names:
        cfg.agent(name)  # an unknown name is an error, not an empty result
        agent = compiled.agents[name]
        tip = f.repo.branch_tip(agent.branch)
        if tip is None:
            continue
        exclude = [cfg.base] if f.repo.resolve(cfg.base) else []
        violations = check.check_range(compiled, agent, [tip], exclude, str(f.repo.common_dir))
        if violations:
            bad.append(check.describe(agent, violations, f"branch {agent.branch}"))
    if bad:
        raise FleetError("\n".join(e.message for e in bad), bad[0].hint)
    return 0


def post_commit() -> int:
    """A fleet across machines: the publisher (publish.py) started, detached, in a session of its
    own; it decides whether the commit is an agent's, and the hook returns at once. (The hook
    itself starts it from the shell; this is `git fleet-check --hook post-commit`, for a hooks
    directory the fleet does not write.)"""
    from . import publish_start  # (only this hook: not on the pre-commit hook's path)

    try:
        publish_start.start()
    except OSError as e:
        print(f"warning: the commit is not published to the fleet's remote: {e}", file=sys.stderr)
    return 0


def run(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if not argv or argv == ["--hook", "pre-commit"]:
        return pre_commit()
    if argv == ["--hook", "pre-merge-commit"]:
        return pre_merge_commit()
    if argv == ["--hook", "post-commit"]:
        return post_commit()
    if argv[0] == "--hook" and len(argv) >= 2 and argv[1] in ("pre-push", "pre-receive"):
        return pushed(argv[1], argv[2:])
    if argv[0] == "--commits":
        return commits(argv[1:])
    raise UsageError(f"unknown arguments: {' '.join(argv)}", USAGE.removeprefix("usage: ").join(("usage: ", "")))


def main() -> int:
    try:
        pause.crash("check")
        return run(sys.argv[1:])
    except FleetError as e:
        print(e.render(), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 (a bug: one plain line (the traceback goes to a log), and the commit is refused
        from . import crash_log  # (only when a bug happened: not on every commit's path)

        print("\n".join(crash_log.report("git fleet-check " + " ".join(sys.argv[1:]), e)), file=sys.stderr)
        return INTERNAL


if __name__ == "__main__":
    sys.exit(main())
