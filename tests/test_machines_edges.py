"""One fleet across machines, at its edges: what a user meets when the input is wrong, a remote
refuses or is away, a shared record has the wrong shape, an agent is taken over or handed off,
and what `git fleet-join` makes of the branch it finds. Real clones and a bare remote over a
path (the hub fixture; tests/test_machines.py's Machines); every refusal is checked for its exit
status, its error: and hint: lines, and for leaving the remote and the clone as they were."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from helpers import Sandbox
from test_machines import Machines

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


# -- helpers ------------------------------------------------------------------------------------------

def _spanning(sb: Sandbox) -> Machines:
    """The orchestrator's clone made to span machines through origin (the hub, over a path)."""
    sb.fleet("init", "--remote", "origin")
    return Machines(sb, str(sb.root / "hub.git"))


def _with_a_box(sb: Sandbox) -> tuple[Machines, Path, dict[str, str]]:
    """The orchestrator's clone spanning machines (_spanning), and a machine "box": its clone and
    its environment."""
    machines = _spanning(sb)
    return machines, machines.machine("box"), machines.env("box")


def _on_hub(sb: Sandbox, ref: str) -> str | None:
    """What the hub holds at `ref` (None: nothing)."""
    found = sb.git("rev-parse", "-q", "--verify", ref, cwd=sb.root / "hub.git", ok=None).out.strip()
    return found or None


def _shared_refs(sb: Sandbox) -> str:
    return sb.git("for-each-ref", "--format=%(refname) %(objectname)", "refs/fleet/", cwd=sb.root / "hub.git").out


def _record(op: str, **fields: object) -> str:
    """A commit message carrying a git-fleet record, as a person forging one by hand would write it."""
    return f"fleet: {op}\n\n" + json.dumps({"fleet": 1, "op": op, **fields}, sort_keys=True)


def _forge(sb: Sandbox, message: str, *, parent: str | None = None, tree: str = EMPTY_TREE,
           cwd: Path | None = None) -> str:
    """A commit made with git itself (no git-fleet): `message` on `tree`, on `parent`."""
    args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
    return sb.git(*args, cwd=cwd).out.strip()


def _machine_id(sb: Sandbox, where: Path) -> str:
    return sb.git("config", "fleet.machine", cwd=where).out.strip()


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def _hints(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("hint: ")]


# -- spanning machines: the remote given, and what it takes ----------------------------------------

def test_init_remote_with_an_unknown_remote_is_misuse_naming_the_known_ones(hub: Sandbox) -> None:
    sb = hub
    res = sb.fleet("init", "--remote", "upstream", ok=False)
    assert res.code == 2
    assert _errors(res.err) == ["error: unknown remote 'upstream'"]
    assert "hint: known remotes: origin; add it first with git remote add NAME URL" in res.err
    assert sb.git("config", "fleet.remote", ok=None).out == ""  # the fleet does not span machines
    assert _shared_refs(sb) == ""


def test_init_remote_refuses_a_remote_without_atomic_pushes_and_sets_nothing(hub: Sandbox) -> None:
    sb = hub
    sb.git("config", "receive.advertiseAtomic", "false", cwd=sb.root / "hub.git")  # (as some hosting services)
    res = sb.fleet("init", "--remote", "origin", ok=False)
    assert res.code == 1
    assert "error: remote 'origin' does not take atomic pushes (git push --atomic), which a fleet across machines needs" \
        in res.err
    assert "hint: use a remote that does (see the README: one fleet across machines); nothing was set" in res.err
    assert sb.git("config", "fleet.remote", ok=None).out == ""
    assert _shared_refs(sb) == ""  # not even this machine's record
    # and the bus stays the files it was: a task is added here, not on the remote
    assert sb.fleet("task", "add", "local").out.strip() == "task-001"
    assert (sb.repo / "tasks").is_dir() and _shared_refs(sb) == ""


def test_a_remote_hook_that_declines_is_quoted_and_nothing_is_half_done(hub: Sandbox) -> None:
    """A remote whose own pre-receive hook declines refs under refs/fleet/: init --remote, then
    (once the record is taken) task add and join, each refused in the hook's words."""
    sb = hub
    refuse = sb.root / "hub.git" / "refuse"
    hook = sb.root / "hub.git" / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\n"
                    f"pattern=$(cat {refuse})\n"
                    "while read old new ref; do\n"
                    '  case "$ref" in $pattern) echo "no $ref here, says the host" >&2; exit 1;; esac\n'
                    "done\n")
    hook.chmod(0o755)
    refuse.write_text("refs/fleet/*\n")
    res = sb.fleet("init", "--remote", "origin", ok=False)
    laptop = _machine_id(sb, sb.repo)
    assert res.code == 1
    assert (f"error: remote 'origin' did not take this machine's record (refs/fleet/machines/{laptop}): "
            f"no refs/fleet/machines/{laptop} here, says the host") in res.err
    assert "hint: the remote must accept refs under refs/fleet/" in res.err
    assert sb.git("config", "fleet.remote", ok=None).out == "" and _shared_refs(sb) == ""
    # the host takes the machine's record, but not the bus's tasks
    refuse.write_text("refs/fleet/bus/tasks/*\n")
    sb.fleet("init", "--remote", "origin")
    res = sb.fleet("task", "add", "declined", ok=False)
    assert res.code == 1
    assert "error: remote 'origin' refused the change: no refs/fleet/bus/tasks/1 here, says the host" in res.err
    assert "hint: nothing changed on the remote" in res.err
    assert _on_hub(sb, "refs/fleet/bus/ids") is None  # (the id and the task go together, or neither)
    assert json.loads(sb.fleet("task", "list", "--json").out) == []
    # nor an agent's hold: the join sets nothing up
    refuse.write_text("refs/fleet/agents/*\n")
    machines = Machines(sb, str(sb.root / "hub.git"))
    box = machines.machine("box")
    res = sb.git("fleet-join", "docs", cwd=box, env=machines.env("box"), ok=False)
    assert res.code == 1 and "error: remote 'origin' refused the hold of 'docs': no refs/fleet/agents/docs here" in res.err
    assert not (sb.root / "box" / "repo-docs").exists()
    assert sb.git("rev-parse", "-q", "--verify", "refs/heads/fleet/docs", cwd=box, ok=None).out == ""


def test_spanning_machines_refuses_a_file_bus_in_flight_and_then_gives_out_ids_after_its_own(hub: Sandbox) -> None:
    sb = hub
    sb.fleet("task", "add", "one")
    sb.fleet("task", "add", "two")
    sb.fleet("task", "claim", "--agent", "api")  # (the file bus: this clone's alone)
    res = sb.fleet("init", "--remote", "origin", ok=False)
    assert res.code == 1
    assert (f"error: the bus in {sb.repo} has 2 task(s) not ended (task-001, task-002): a bus across machines "
            "would leave them behind") in res.err
    assert "hint: finish or cancel them first (git fleet-task list), then run this again" in res.err
    assert sb.git("config", "fleet.remote", ok=None).out == "" and _shared_refs(sb) == ""
    sb.fleet("task", "done", "1", "--agent", "api")
    sb.fleet("task", "cancel", "2")
    machines = _spanning(sb)
    # an id the file bus gave out is never given out again, here or on another machine
    assert sb.fleet("task", "add", "three").out.strip() == "task-003"
    box = machines.machine("box")
    assert sb.git("fleet-task", "add", "four", cwd=box, env=machines.env("box")).out.strip() == "task-004"


def test_a_fleet_poll_that_is_not_a_duration_is_misuse_naming_the_key(hub: Sandbox) -> None:
    sb = hub
    _spanning(sb)
    sb.git("config", "fleet.poll", "soon")
    res = sb.fleet("task", "list", ok=False)
    assert res.code == 2
    assert "error: git config fleet.poll = 'soon' is not a duration" in res.err
    assert "hint: give seconds, e.g. 2 or 5s" in res.err
    sb.git("config", "fleet.poll", "5s")  # a duration with its unit is one
    assert sb.fleet("task", "add", "polled").out.strip() == "task-001"


# -- join ---------------------------------------------------------------------------------------------

def test_join_misuse_exits_2_before_anything_is_held(hub: Sandbox) -> None:
    sb = hub
    machines, box, env = _with_a_box(sb)
    res = sb.git("fleet-join", "nobody", cwd=box, env=env, ok=False)
    assert res.code == 2 and "error: no agent named 'nobody'" in res.err and "hint: agents: api, docs" in res.err
    res = sb.git("fleet-join", "api", "--remote", "upstream", cwd=box, env=env, ok=False)
    assert res.code == 2
    assert "error: this clone's fleet meets at remote 'origin', not 'upstream'" in res.err
    assert "hint: leave --remote out" in res.err
    assert _on_hub(sb, "refs/fleet/agents/api") is None and _on_hub(sb, "refs/fleet/agents/nobody") is None
    assert not (sb.root / "box" / "repo-api").exists()


def test_join_brings_a_stale_branch_up_to_the_remotes_and_keeps_one_that_moved_apart(hub: Sandbox) -> None:
    sb = hub
    machines = _spanning(sb)
    api_here, docs_here = sb.root / "repo-api", sb.root / "repo-docs"  # (held by no machine: pushed by hand)
    sb.commit(api_here, {"src/backend/first.py": "1\n"}, "api: first")
    sb.commit(docs_here, {"docs/first.md": "1\n"}, "docs: first")
    sb.git("push", "-q", "origin", "fleet/api", "fleet/docs")
    box = machines.machine("box")
    env = machines.env("box")
    # the box has both branches as they were then...
    sb.git("branch", "fleet/api", "origin/fleet/api", cwd=box)
    sb.git("branch", "fleet/docs", "origin/fleet/docs", cwd=box)
    stale_docs = sb.head("fleet/docs", cwd=box)
    sb.git("checkout", "-q", "fleet/docs", cwd=box)
    sb.commit(box, {"docs/boxed.md": "made on the box, never pushed\n"}, "docs: the box's own")
    sb.git("checkout", "-q", "main", cwd=box)
    boxed = sb.head("fleet/docs", cwd=box)
    assert boxed != stale_docs
    # ...and the laptop goes on with both, and publishes them
    sb.commit(api_here, {"src/backend/second.py": "2\n"}, "api: second")
    sb.commit(docs_here, {"docs/second.md": "2\n"}, "docs: second")
    sb.git("push", "-q", "origin", "fleet/api", "fleet/docs")
    published_api = sb.head("fleet/api")
    published_docs = sb.head("fleet/docs")
    # api: the box's branch is behind the remote's, so it is brought up to it
    joined = sb.git("fleet-join", "api", cwd=box, env=env)
    assert "branch fleet/api (origin's fleet/api)" in joined.out
    assert sb.head(cwd=sb.root / "box" / "repo-api") == published_api == sb.head("fleet/api", cwd=box)
    assert (sb.root / "box" / "repo-api" / "src/backend/second.py").exists()
    # docs: the two moved apart, so the box's is kept, and the join says so
    joined = sb.git("fleet-join", "docs", cwd=box, env=env)
    assert "branch fleet/docs (this clone's fleet/docs)" in joined.out
    assert "fleet/docs here and on origin have moved apart; this clone's is kept" in joined.err
    assert sb.head(cwd=sb.root / "box" / "repo-docs") == boxed
    assert (sb.root / "box" / "repo-docs" / "docs/boxed.md").exists()
    assert _on_hub(sb, "refs/heads/fleet/docs") == published_docs  # the remote's is left as it was


def test_join_path_refuses_a_non_empty_directory_giving_the_hold_back_and_uses_an_empty_one(hub: Sandbox) -> None:
    sb = hub
    machines, box, env = _with_a_box(sb)
    full = sb.root / "box" / "full"
    full.mkdir()
    (full / "notes.txt").write_text("someone's\n")
    res = sb.git("fleet-join", "docs", "--path", str(full), cwd=box, env=env, ok=False)
    assert res.code == 1
    assert f"error: {full} exists and is not empty; 'docs' was not set up here" in res.err
    assert "hint: give another place: git fleet-join docs --path DIR" in res.err
    assert (full / "notes.txt").read_text() == "someone's\n" and sorted(os.listdir(full)) == ["notes.txt"]
    assert sb.git("branch", "--list", "fleet/docs", cwd=box).out == ""
    # the hold taken for the join is given back: no machine holds docs, so the laptop joins it unasked
    hold = _on_hub(sb, "refs/fleet/agents/docs")
    assert hold is not None and '"op": "free"' in sb.git("log", "-1", "--format=%B", hold, cwd=sb.root / "hub.git").out
    sb.fleet("join", "docs")
    # and on the box, taken over, into an empty directory of its choosing
    empty = sb.root / "box" / "elsewhere" / "docs-work"
    empty.mkdir(parents=True)
    joined = sb.git("fleet-join", "docs", "--take-over", "--path", str(empty), cwd=box, env=env)
    assert f"worktree {empty}," in joined.out
    assert (empty / "docs" / "guide.md").exists()
    listed = sb.git("worktree", "list", "--porcelain", cwd=box).out
    assert f"worktree {empty}\n" in listed and "branch refs/heads/fleet/docs" in listed


def test_a_join_again_on_the_holding_machine_keeps_its_hold_even_when_it_fails(hub: Sandbox) -> None:
    sb = hub
    machines, box, env = _with_a_box(sb)
    sb.git("fleet-join", "api", cwd=box, env=env)
    held = _on_hub(sb, "refs/fleet/agents/api")
    again = sb.git("fleet-join", "api", cwd=box, env=env)  # nothing to do: held here, its worktree there
    assert f"worktree {sb.root / 'box' / 'repo-api'}," in again.out and "taken over" not in again.err
    assert _on_hub(sb, "refs/fleet/agents/api") == held  # not even renewed
    # its worktree gone, a join into a place that is not empty fails, and the hold stays the box's
    sb.git("worktree", "remove", "--force", str(sb.root / "box" / "repo-api"), cwd=box)
    full = sb.root / "box" / "full"
    full.mkdir()
    (full / "x").write_text("x\n")
    res = sb.git("fleet-join", "api", "--path", str(full), cwd=box, env=env, ok=False)
    assert res.code == 1 and "exists and is not empty; 'api' was not set up here" in res.err
    assert _on_hub(sb, "refs/fleet/agents/api") == held  # (not given back to no one)
    res = sb.fleet("join", "api", ok=False)
    assert res.code == 1 and f"agent 'api' is held by machine {_machine_id(sb, box)} (" in res.err


def test_join_with_the_remote_away_names_it_and_sets_nothing_up(hub: Sandbox) -> None:
    sb = hub
    machines, box, env = _with_a_box(sb)
    sb.git("fleet-join", "api", cwd=box, env=env)
    sb.fleet("task", "add", "one", "--agent", "api")
    sb.git("fleet-task", "claim", cwd=sb.root / "box" / "repo-api", env=env)
    refs = sb.git("for-each-ref", "refs/fleet-remote", cwd=box).out
    (sb.root / "hub.git").rename(sb.root / "away.git")
    res = sb.git("fleet-join", "docs", cwd=box, env=env, ok=False)
    assert res.code == 1 and f"error: cannot reach remote 'origin' ({sb.root / 'hub.git'}): " in res.err
    assert "hint: nothing was recorded; check it with `git fetch origin`" in res.err
    assert not (sb.root / "box" / "repo-docs").exists()
    assert sb.git("branch", "--list", "fleet/docs", cwd=box).out == ""
    # a renewal is refused the same way; it carries no result, so nothing is kept for sending again
    res = sb.git("fleet-task", "renew", "1", "--agent", "api", cwd=box, env=env, ok=False)
    assert res.code == 1 and "cannot reach remote 'origin'" in res.err and "the result was not sent" not in res.err
    assert list(box.glob("results/task-001-unsent-*")) == []
    assert sb.git("for-each-ref", "refs/fleet-remote", cwd=box).out == refs  # nothing recorded here
    # what is listed is the last fetched state, with its age, in minutes and then in hours
    stamp = box / ".git" / "fleet" / "remote" / "origin" / "fetched"
    for ago, said in ((10 * 60, "fetched 10m ago"), (3 * 3600, "fetched 3h ago")):
        os.utime(stamp, (time.time() - ago, time.time() - ago))
        listed = sb.git("fleet-task", "list", cwd=box, env=env)
        assert "task-001  claimed  api" in listed.out and said in listed.err, listed.err


def test_a_waiting_claim_waits_out_the_remote_away_and_claims_once_it_answers(hub: Sandbox) -> None:
    sb = hub
    machines, box, env = _with_a_box(sb)
    sb.git("config", "fleet.poll", "0.3", cwd=box)
    sb.git("fleet-join", "docs", cwd=box, env=env)
    waiting = sb.spawn(["git", "fleet-task", "claim", "--wait", "--agent", "docs"], cwd=box, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    late = None
    try:
        time.sleep(1)
        assert waiting.poll() is None  # (nothing to claim yet: it waits)
        (sb.root / "hub.git").rename(sb.root / "away.git")
        # and one that starts while the remote is away waits it out from its first try
        late = sb.spawn(["git", "fleet-task", "claim", "--wait", "--agent", "docs"], cwd=box, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.5)
        assert waiting.poll() is None and late.poll() is None  # (the remote away is waited out, not an error)
        (sb.root / "away.git").rename(sb.root / "hub.git")
        sb.fleet("task", "add", "after the outage", "--agent", "docs")
        sb.fleet("task", "add", "and another", "--agent", "docs")
        out, err = waiting.communicate(timeout=30)
        late_out, late_err = late.communicate(timeout=30)
    finally:
        Sandbox.kill_group(waiting)
        if late is not None:
            Sandbox.kill_group(late)
    assert waiting.returncode == 0 and late.returncode == 0, err + late_err
    assert sorted([out.split("\t")[0], late_out.split("\t")[0]]) == ["task-001", "task-002"]
    for tid in (1, 2):
        shown = json.loads(sb.fleet("task", "show", str(tid), "--json").out)
        assert (shown["status"], shown["claimed_by"], shown["attempt"]) == ("claimed", "docs", 1)


def test_up_with_the_remote_away_starts_only_the_agents_last_held_here(hub: Sandbox, tmux: None) -> None:
    sb = hub
    cfg = sb.repo / ".gitfleet.toml"
    text = cfg.read_text()
    command = next(line for line in text.splitlines() if line.startswith("command = "))
    cfg.write_text(text.replace(command, 'command = "exec sleep 600"'))
    _spanning(sb)
    sb.fleet("join", "api")  # held here; docs is held nowhere
    (sb.root / "hub.git").rename(sb.root / "away.git")
    res = sb.fleet("up", "--detach", "--stagger", "0", "--watch", "none", "--no-sandbox", ok=False)
    windows = subprocess.run(["tmux", "list-windows", "-a", "-F", "#{window_name}"], capture_output=True,
                             text=True).stdout.split()
    assert res.code == 1
    assert "cannot reach remote 'origin'" in res.err
    assert "'docs' is not known to run on this machine, so it does not start" in res.err
    assert "hint: start it when the remote answers, or run it where it is held" in res.err
    assert "api" in windows and "docs" not in windows


# -- take-over and handoff ------------------------------------------------------------------------------

def test_a_handed_off_agent_is_refused_claims_here_and_a_take_over_takes_it_without_its_work(hub: Sandbox) -> None:
    sb = hub
    machines = _spanning(sb)
    laptop = _machine_id(sb, sb.repo)
    sb.fleet("join", "api")
    sb.fleet("task", "add", "the api", "--agent", "api")
    sb.fleet("task", "claim", "--agent", "api")
    (sb.root / "repo-api" / "src/backend/wip.py").write_text("half done\n")
    sb.fleet("teleport", "push", "api")
    snapshot = _on_hub(sb, "refs/fleet/teleport/api")
    sb.fleet("task", "add", "more api", "--agent", "api")
    res = sb.fleet("task", "claim", "--agent", "api", ok=False)
    assert res.code == 1
    assert f"error: agent 'api' was handed off by git fleet-teleport push (from machine {laptop})" in res.err
    assert "hint: nothing was claimed" in res.err
    assert json.loads(sb.fleet("task", "show", "2", "--json").out)["status"] == "open"
    # taken over on the box (not pulled): held there, without the work, which stays in the snapshot
    box = machines.machine("box")
    env = machines.env("box")
    joined = sb.git("fleet-join", "api", "--take-over", cwd=box, env=env)
    assert "taken over from machine" not in joined.err  # (no machine's hold was taken: it was released)
    there = sb.root / "box" / "repo-api"
    assert not (there / "src/backend/wip.py").exists()
    assert snapshot is not None and _on_hub(sb, "refs/fleet/teleport/api") == snapshot
    assert sb.git("fleet-task", "claim", cwd=there, env=env).out.startswith("task-002")
    res = sb.fleet("task", "done", "1", "--agent", "api", ok=False)  # the laptop's copy stops here
    assert f"agent 'api' runs on machine {_machine_id(sb, box)}" in res.err and "kept on the remote" in res.err


def test_a_hold_by_a_machine_without_a_readable_record_is_named_by_its_id_and_can_be_taken_over(hub: Sandbox) -> None:
    sb = hub
    _spanning(sb)
    since = 1767225600  # 2026-01-01 00:00:00 UTC
    ghost = _forge(sb, _record("hold", agent="docs", machine="ghost", since=since, nonce="g"))
    odd = _forge(sb, _record("hold", agent="api", machine="oddball", since=since, nonce="o"))
    junk = _forge(sb, "fleet: machine oddball\n\nnot a record")
    sb.git("push", "-q", "origin", f"{ghost}:refs/fleet/agents/docs", f"{odd}:refs/fleet/agents/api",
           f"{junk}:refs/fleet/machines/oddball")
    res = sb.fleet("join", "docs", ok=False)
    assert res.code == 1
    assert ("error: agent 'docs' is held by machine ghost since 2026-01-01 00:00:00 UTC; one agent runs on one "
            "machine at a time") in res.err
    assert "--take-over" in "".join(_hints(res.err))
    res = sb.fleet("join", "api", ok=False)
    assert "error: agent 'api' is held by machine oddball since 2026-01-01 00:00:00 UTC;" in res.err
    assert _on_hub(sb, "refs/fleet/agents/docs") == ghost
    joined = sb.fleet("join", "docs", "--take-over")
    assert "taken over from machine ghost" in joined.err
    hold = sb.git("log", "-1", "--format=%B", "refs/fleet/agents/docs", cwd=sb.root / "hub.git").out
    assert f'"machine": "{_machine_id(sb, sb.repo)}"' in hold and '"reason": "taken over from machine ghost"' in hold
    # a hold whose record is no git-fleet record: refused, and a take-over replaces it
    sb.git("push", "-q", "--force", "origin", f"{junk}:refs/fleet/agents/api")
    res = sb.fleet("join", "api", ok=False)
    assert res.code == 1 and "refs/fleet/agents/api: not a git-fleet record; so whether another machine holds" in res.err
    assert "--take-over" in "".join(_hints(res.err))
    assert "warning: taken over from a hold it could not read\n" in sb.fleet("join", "api", "--take-over").err
    assert _on_hub(sb, "refs/fleet/agents/api") != junk


# -- records of the wrong shape -------------------------------------------------------------------------

def test_records_with_an_unknown_field_or_step_are_invalid_tasks_and_the_bus_goes_on(hub: Sandbox) -> None:
    sb = hub
    _spanning(sb)
    for title in ("one", "two", "three"):
        sb.fleet("task", "add", title)
    for tid, extra in ((1, {"colour": "red"}), (2, {})):
        tip = sb.git("rev-parse", f"refs/fleet-remote/origin/bus/tasks/{tid}").out.strip()
        op = "claim" if extra else "escalate"
        bad = _forge(sb, _record(op, task=tid, attempt=1, agent="api", **extra), parent=tip, tree=f"{tip}^{{tree}}")
        sb.git("push", "-q", "origin", f"{bad}:refs/fleet/bus/tasks/{tid}")
    res = sb.fleet("task", "list")
    assert "task-001  invalid" in res.out and "task-002  invalid" in res.out and "task-003  open" in res.out
    assert "refs/fleet/bus/tasks/1" in res.err and "a record this git-fleet cannot read" in res.err
    assert "refs/fleet/bus/tasks/2" in res.err and "an unknown step 'escalate'" in res.err
    assert sb.fleet("task", "claim", "--agent", "api").out.startswith("task-003")
    res = sb.fleet("task", "done", "1", "--agent", "api", ok=False)  # no one holds an invalid task
    assert res.code == 1 and "'api' does not hold it" in res.err


def test_a_log_ids_or_kept_ref_of_the_wrong_shape_leaves_the_rest_of_the_bus_working(hub: Sandbox) -> None:
    sb = hub
    _spanning(sb)
    sb.fleet("task", "add", "one")
    sb.fleet("task", "add", "two")
    # a log (as by hand) with a task whose record is not one, and a file that is no task's
    blob = sb.git("hash-object", "-w", "--stdin", input="not a record\n").out.strip()
    spec = sb.git("hash-object", "-w", "--stdin", input="---\ntitle: five\n---\nfive\n").out.strip()
    five = sb.git("mktree", input=f"100644 blob {blob}\trecord\n100644 blob {spec}\tspec.md\n").out.strip()
    tree = sb.git("mktree", input=f"040000 tree {five}\t000005\n100644 blob {blob}\tREADME\n").out.strip()
    log = _forge(sb, _record("log", nonce="l"), tree=tree)
    ids = _forge(sb, "not an ids record", parent=sb.git("rev-parse", "refs/fleet-remote/origin/bus/ids").out.strip())
    tag = sb.git("mktag", input=f"object {log}\ntype commit\ntag kept\ntagger T <t@example.com> 0 +0000\n\nx\n").out
    sb.git("push", "-q", "origin", f"{log}:refs/fleet/bus/log", f"+{ids}:refs/fleet/bus/ids",
           f"{tag.strip()}:refs/fleet/bus/kept/1/api-1-x")
    res = sb.fleet("task", "list")
    assert "task-001  open" in res.out and "task-002  open" in res.out and "task-005  invalid" in res.out
    assert "refs/fleet/bus/log:000005/record: not a git-fleet record" in res.err
    assert "README" not in res.out + res.err
    shown = json.loads(sb.fleet("task", "show", "1", "--json").out)
    assert shown["unrecorded"] == []  # (a kept ref that is not a commit is nothing this bus kept)
    # ids go on after every task known, the broken ids record passed over
    assert sb.fleet("task", "add", "six").out.strip() == "task-006"
    assert sb.fleet("task", "claim", "--agent", "api").out.startswith("task-001")


# -- the bus's own refusals -----------------------------------------------------------------------------

def test_steps_on_missing_removed_ended_or_claimed_tasks_are_refused_and_change_nothing(hub: Sandbox) -> None:
    sb = hub
    _spanning(sb)
    for title in ("one", "two", "three"):
        sb.fleet("task", "add", title)
    sb.fleet("task", "add", "after three", "--depends", "3")
    sb.fleet("task", "add", "by mistake")
    sb.fleet("task", "claim", "--agent", "api")  # task-001
    sb.fleet("task", "done", "1", "--agent", "api")
    sb.fleet("task", "claim", "--agent", "api")  # task-002
    sb.fleet("task", "rm", "5")
    before = _shared_refs(sb)
    misuse = {
        ("add", ""): "a task needs a title",
        ("show", "9"): "no task 9 on the shared bus (origin)",
        ("cancel", "9"): "no task 9 on the shared bus (origin)",
        ("done", "9", "--agent", "api"): "no task 9 on the shared bus (origin)",
    }
    for args, said in misuse.items():
        res = sb.fleet("task", *args, ok=False)
        assert res.code == 2 and f"error: {said}" in res.err, (args, res)
    refused = {
        ("cancel", "1"): ("task-001 is done already; there is nothing to cancel", "see git fleet-task show 1"),
        ("rm", "1"): ("task-001 is done; its spec stays with its result", None),
        ("rm", "2"): ("task-002 has been claimed (attempt 1)", "cancel it instead: git fleet-task cancel 2"),
        ("rm", "3"): ("task-004 depends on task-003", "cancel or remove them first"),
        ("show", "5"): ("task-005 was removed (git fleet-task rm): its spec is deleted", "its id is not given out again"),
        ("cancel", "5"): ("task-005 was removed already; there is nothing to cancel", None),
    }
    for args, (said, hint) in refused.items():
        res = sb.fleet("task", *args, ok=False)
        assert res.code == 1 and f"error: {said}" in res.err, (args, res)
        assert hint is None or f"hint: {hint}" in res.err, (args, res)
    res = sb.fleet("task", "done", "9", "--agent", "api", ok=False)
    assert "this result was not kept: there is no such task" in res.err
    assert _shared_refs(sb) == before  # nothing changed on the remote


def test_the_server_refuses_steps_and_refs_the_protocol_does_not_allow(hub: Sandbox) -> None:
    sb = hub
    sb.git("fleet-init", "--server", cwd=sb.root / "hub.git")
    _spanning(sb)
    me = _machine_id(sb, sb.repo)
    sb.fleet("join", "api")
    sb.fleet("task", "add", "one")
    sb.fleet("task", "add", "two")
    sb.fleet("task", "add", "three")
    sb.fleet("task", "claim", "--agent", "api")
    sb.fleet("task", "done", "1", "--agent", "api")
    sb.fleet("task", "claim", "--agent", "api")  # task-002, claimed
    sb.fleet("task", "cancel", "3", "--reason", "not needed")  # the orchestrator's cancel passes the hook
    tips = {n: sb.git("rev-parse", f"refs/fleet-remote/origin/bus/tasks/{n}").out.strip() for n in (1, 2)}
    ids = sb.git("rev-parse", "refs/fleet-remote/origin/bus/ids").out.strip()
    before = _shared_refs(sb)

    def step(tid: int, op: str, on: int | None = None, **fields: object) -> str:
        """A step of task `tid` on top of the tip of task `on` (default: its own)."""
        tip = tips[on or tid]
        return _forge(sb, _record(op, task=tid, machine=me, nonce=op, **fields), parent=tip, tree=f"{tip}^{{tree}}")

    forged = {
        "task-001 has ended (done)":
            [f"{step(1, 'renew', attempt=1, agent='api', lease=600)}:refs/fleet/bus/tasks/1"],
        "only a task never claimed may be removed": [f"{step(2, 'removed')}:refs/fleet/bus/tasks/2"],
        "'hold' is not a step of a task": [f"{step(2, 'hold', agent='api')}:refs/fleet/bus/tasks/2"],
        "a step of task 1 on the ref of another": [f"{step(1, 'cancelled', on=2)}:refs/fleet/bus/tasks/2"],
        "a shared ref moves by one commit on top of what it was":
            [f"{_forge(sb, _record('cancelled', task=2, nonce='root'))}:refs/fleet/bus/tasks/2"],
        "a new shared ref starts a chain of its own":
            [f"{_forge(sb, _record('kept', task=2, agent='api', nonce='k'), parent=tips[2])}:refs/fleet/bus/kept/2/x"],
        "there is no task 9 to keep a result of":
            [f"{_forge(sb, _record('kept', task=9, agent='api', nonce='k9'))}:refs/fleet/bus/kept/9/x"],
        "the log records folds": [f"{_forge(sb, _record('ids', next=99, nonce='i'))}:refs/fleet/bus/log"],
        "task 7 is not an id this push gives out": [
            f"{_forge(sb, _record('ids', next=5, nonce='n'), parent=ids)}:refs/fleet/bus/ids",
            f"{_forge(sb, _record('open', task=7, nonce='o'))}:refs/fleet/bus/tasks/7"],
    }
    for said, refspecs in forged.items():
        res = sb.git("push", "--atomic", "origin", *(f"+{spec}" for spec in refspecs), ok=False)
        assert f"rejected: {said}" in res.err, (said, res.err)
    assert _shared_refs(sb) == before
    # a teleport snapshot is teleport's own (its lease keeps it): the hook lets it through
    snap = _forge(sb, "a snapshot")
    sb.git("push", "-q", "origin", f"{snap}:refs/fleet/teleport/api")
    assert _on_hub(sb, "refs/fleet/teleport/api") == snap
    shown = {t["name"]: t["status"] for t in json.loads(sb.fleet("task", "list", "--json").out)}
    assert shown == {"task-001": "done", "task-002": "claimed", "task-003": "cancelled"}


# -- a checkpoint merge across machines -----------------------------------------------------------------

def _merge_refused(sb: Sandbox, said: str, hint: str) -> None:
    """`git fleet-merge api` refused (exit 1) saying `said`, with `hint`, and nothing changed:
    neither this clone's base nor the remote's, nor the agent's work brought here."""
    here, there = sb.head("main"), _on_hub(sb, "refs/heads/main")
    res = sb.fleet("merge", "api", ok=False)
    assert res.code == 1 and said in res.err and f"hint: {hint}" in res.err, res
    assert sb.head("main") == here and _on_hub(sb, "refs/heads/main") == there
    assert not (sb.repo / "src/backend/work.py").exists()


def _api_worked_and_another_clone(sb: Sandbox) -> Path:
    """The fleet across machines, api (held by no machine) with a commit here; another clone of the
    hub: its path."""
    _spanning(sb)
    sb.commit(sb.root / "repo-api", {"src/backend/work.py": "w = 1\n"}, "api's work")
    other = sb.root / "other"
    sb.git("clone", "-q", str(sb.root / "hub.git"), str(other), cwd=sb.root)
    return other


def test_a_merge_is_refused_with_nothing_changed_when_the_remotes_base_is_ahead_or_moved_apart(hub: Sandbox) -> None:
    sb = hub
    other = _api_worked_and_another_clone(sb)
    sb.commit(other, {"README.md": "# moved on the remote\n"}, "someone else's push")
    sb.git("push", "-q", "origin", "main", cwd=other)
    there = sb.head("main", cwd=other)
    _merge_refused(sb, f"error: main on 'origin' is ahead of this clone's ({there[:12]}); nothing was changed",
                   "bring it here first: git pull --ff-only origin main")
    sb.commit(sb.repo, {"docs/guide.md": "# changed here\n"}, "the orchestrator's own")
    _merge_refused(sb, "error: main here and on 'origin' have moved apart; nothing was changed",
                   "merge them first (git pull origin main), then merge the agents")
    sb.git("pull", "-q", "--no-rebase", "--no-edit", "origin", "main")  # as the hint says: then it merges
    sb.fleet("merge", "api")
    assert (sb.repo / "src/backend/work.py").exists()
    assert _on_hub(sb, "refs/heads/main") == sb.head("main")


def test_a_checkpoint_tag_that_differs_from_the_remotes_is_named_not_called_the_remote_away(hub: Sandbox) -> None:
    sb = hub
    other = _api_worked_and_another_clone(sb)
    sb.git("tag", "-a", "fleet/v1", "-m", "the other clone's", cwd=other)
    sb.git("push", "-q", "origin", "fleet/v1", cwd=other)
    sb.git("tag", "-a", "fleet/v1", "-m", "this clone's own")
    _merge_refused(sb, "error: a checkpoint tag here differs from remote 'origin''s: ",
                   "compare them (git ls-remote --tags origin 'refs/tags/fleet/*'), and keep one")
