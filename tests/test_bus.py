"""The coordination bus on real files, with real concurrent processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from git_fleet.bus import Bus, front_matter
from helpers import Result, Sandbox


def test_add_list_show_and_the_spec_on_disk(bus_repo: Sandbox) -> None:
    sb = bus_repo
    assert sb.fleet("task", "add", "Add refunds", "--agent", "api", "--priority", "2").out == "task-001\n"
    sb.run(["git", "fleet-task", "add", "Document refunds", "--depends", "1", "--body-file", "-"],
           input="Explain the refund flow.\n")
    spec = sb.repo / "tasks/task-002-document-refunds.md"
    meta, body = front_matter(spec, spec.read_text())
    assert meta["title"] == "Document refunds" and meta["depends"] == ["1"] and body == "Explain the refund flow.\n"
    assert sb.fleet("task", "list").out.splitlines() == ["task-001  open  api  Add refunds",
                                                         "task-002  open  -    Document refunds"]
    shown = json.loads(sb.fleet("task", "show", "task-002", "--json").out)
    assert shown["status"] == "open" and shown["depends"] == [1] and shown["body"] == "Explain the refund flow.\n"
    # the same bus from an agent's worktree
    assert sb.fleet("task", "path", cwd=sb.root / "repo-api").out.strip() == str(sb.repo)
    assert "Add refunds" in sb.fleet("task", "list", cwd=sb.root / "repo-docs").out


def test_claim_order_assignment_and_dependencies(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "low")
    sb.fleet("task", "add", "high", "--priority", "5")
    sb.fleet("task", "add", "for api", "--agent", "api", "--priority", "9")
    sb.fleet("task", "add", "after low", "--depends", "1", "--priority", "9")
    assert sb.fleet("task", "claim", "--agent", "docs").out.startswith("task-002\thigh\t")
    assert sb.fleet("task", "claim", cwd=sb.root / "repo-api").out.startswith("task-003\t")  # its own worktree
    assert sb.fleet("task", "claim", "--agent", "docs").out.startswith("task-001\t")
    res = sb.fleet("task", "claim", "--agent", "docs", ok=False)
    assert res.code == 1 and "no task can be claimed by 'docs' now" in res.err  # task-004 waits for task-001
    sb.fleet("task", "done", "1", "--agent", "docs")
    assert sb.fleet("task", "claim", "--agent", "docs").out.startswith("task-004\t")
    res = sb.fleet("task", "claim", ok=False)
    assert res.code == 2 and "--agent" in res.err


def test_results_renew_release_and_refusals(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "one")
    res = sb.fleet("task", "done", "1", "--agent", "api", ok=False)
    assert "task-001 is not claimed; 'api' does not hold it" in res.err
    sb.fleet("task", "claim", "--agent", "api")
    res = sb.fleet("task", "done", "1", "--agent", "docs", ok=False)
    assert "claimed by 'api' (attempt 1); 'docs' does not hold it" in res.err
    sb.fleet("task", "renew", "1", "--agent", "api", "--lease", "2h")
    assert json.loads(sb.fleet("task", "show", "1", "--json").out)["lease_expires"]
    sb.fleet("task", "release", "1", "--agent", "api")
    assert sb.fleet("task", "claim", "--agent", "docs").out.startswith("task-001")
    out = sb.run(["git", "fleet-task", "fail", "1", "--agent", "docs", "--reason", "no access to the API"]).out
    result = Path(out.strip())
    meta, body = front_matter(result, result.read_text())
    assert meta["status"] == "failed" and meta["attempt"] == "2" and body.strip() == "no access to the API"
    assert "already" in sb.fleet("task", "done", "1", "--agent", "docs", ok=False).err
    assert "no task 99" in sb.fleet("task", "show", "99", ok=False).err
    assert "not a task id" in sb.fleet("task", "show", "x1", ok=False).err


def test_a_hand_broken_spec_is_reported_and_the_rest_keeps_working(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "good one")
    sb.fleet("task", "add", "to be broken")
    spec = next((sb.repo / "tasks").glob("task-002-*.md"))
    spec.write_text("---\ntitle: broken\nthis line is wrong\n---\n")
    res = sb.fleet("task", "list")
    assert "task-002  invalid" in res.out
    assert f"warning: {spec}:3: expected 'key: value'" in res.err
    assert sb.fleet("task", "claim", "--agent", "api").out.startswith("task-001")
    assert sb.fleet("task", "claim", "--agent", "api", ok=False).code == 1


def test_ids_are_unique_when_many_processes_add_at_once(bus_repo: Sandbox) -> None:
    sb = bus_repo
    procs = [subprocess.Popen(["git", "fleet-task", "add", f"task from {i}"], cwd=sb.repo, stdout=subprocess.PIPE,
                              text=True) for i in range(8)]
    ids = sorted(p.communicate()[0].strip() for p in procs)
    assert ids == [f"task-{i:03d}" for i in range(1, 9)]
    assert len(list((sb.repo / "tasks").glob("task-*.md"))) == 8


def test_eight_workers_drain_500_tasks_each_claimed_exactly_once(tmp_path: Path) -> None:
    bus = Bus(tmp_path / "bus")
    for i in range(500):
        bus.add(f"task {i}")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    workers = [subprocess.Popen([sys.executable, "-m", "git_fleet.standin", "--drain", str(bus.root), f"w{i}",
                                 "--pad", "5000"], stdout=subprocess.PIPE, text=True, env=env) for i in range(8)]
    claimed = [int(x) for w in workers for x in w.communicate(timeout=600)[0].split()]
    assert sorted(claimed) == list(range(1, 501))  # every task once, none twice
    assert all(w.returncode == 0 for w in workers)
    tasks = bus.all()
    assert {t.status for t in tasks} == {"done"} and {t.attempt for t in tasks} == {1}
    for t in tasks:
        meta, body = front_matter(t.result, t.result.read_text())  # type: ignore[arg-type]
        assert body == f"result of {t.name} by {meta['agent']}\n" + "x" * 5000 + "\n"
    assert not [p for p in (bus.root / "results").iterdir() if p.name.startswith(".tmp")]


def test_a_killed_workers_task_returns_when_its_lease_lapses(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "fragile")
    worker = subprocess.Popen(["sh", "-c", "git fleet-task claim --agent api --lease 1s && sleep 600"], cwd=sb.repo,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert worker.stdout is not None and worker.stdout.readline().startswith("task-001")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert sb.fleet("task", "claim", "--agent", "docs", ok=False).code == 1  # still leased
    time.sleep(1.2)
    assert sb.fleet("task", "claim", "--agent", "docs").out.startswith("task-001")
    shown = json.loads(sb.fleet("task", "show", "1", "--json").out)
    assert (shown["attempt"], shown["claimed_by"]) == (2, "docs")
    # the first worker's late result is not accepted
    res = sb.fleet("task", "done", "1", "--agent", "api", ok=False)
    assert "claimed by 'docs' (attempt 2)" in res.err
    sb.fleet("task", "done", "1", "--agent", "docs")


def test_claim_wait_wakes_when_a_task_arrives(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "path")
    (sb.repo / "tasks").mkdir(exist_ok=True)
    waiter = subprocess.Popen(["git", "fleet-task", "claim", "--wait", "--agent", "docs"], cwd=sb.repo,
                              stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert waiter.poll() is None
    sb.fleet("task", "add", "arrives later")
    added = time.time()  # (the add's own fsync can be slow on a busy disk: time the wake-up from here)
    out, _ = waiter.communicate(timeout=30)
    assert out.startswith("task-001\tarrives later")
    assert time.time() - added < 3  # woken by the change, not by the 5-second rescan


def test_plan_keeps_the_orchestrators_notes(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "first")
    sb.fleet("task", "add", "second", "--depends", "1", "--agent", "docs")
    plan = sb.repo / "master_plan.md"
    plan.write_text("# Plan\n\nMy notes before.\n")
    sb.fleet("plan")
    sb.fleet("task", "claim", "--agent", "api")
    text = plan.read_text()
    plan.write_text(text + "\nMy notes after.\n")
    sb.fleet("plan")
    text = plan.read_text()
    assert text.startswith("# Plan\n\nMy notes before.\n") and text.endswith("My notes after.\n")
    assert "### Claimed (1)\n\n- [task-001](tasks/task-001-first.md) first, claimed by api" in text
    assert "### Blocked (1)\n\n- [task-002](tasks/task-002-second.md) second (for docs), after task-001" in text
    assert text.count("## Tasks") == 1


def test_live_claim_state_is_never_tracked(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "one")
    sb.fleet("task", "claim", "--agent", "api")
    sb.git("add", "-A")
    staged = sb.git("diff", "--cached", "--name-only").out.split()
    assert "tasks/task-001-one.md" in staged  # specs may be committed, if the orchestrator wants
    assert not [p for p in staged if p.startswith("tasks/.state/")]


def test_a_worker_killed_mid_write_leaves_only_temporary_files(bus_repo: Sandbox) -> None:
    """A writer killed before its link() leaves a hidden temporary file, never a partial claim or
    result: the task stays claimable once the lease lapses, and the next result lands whole."""
    sb = bus_repo
    sb.fleet("task", "add", "one")
    sb.fleet("task", "claim", "--agent", "api", "--lease", "1s")
    (sb.repo / "results/.task-001-result.md.abc123.tmp").write_text("---\nstatus: do")  # cut off
    (sb.repo / "tasks/.state/.task-001.claim-2.def456.tmp").write_text('{"agent": "do')  # cut off
    time.sleep(1.2)
    assert json.loads(sb.fleet("task", "show", "1", "--json").out)["status"] == "open"
    assert sb.fleet("task", "claim", "--agent", "docs").out.startswith("task-001")
    out = sb.fleet("task", "done", "1", "--agent", "docs", "--result-file", "-").out
    meta, _ = front_matter(Path(out.strip()), Path(out.strip()).read_text())
    assert (meta["status"], meta["agent"], meta["attempt"]) == ("done", "docs", "2")


# -- ending and removing tasks; results never lost --------------------------------------------------

def worktree(sb: Sandbox, agent: str) -> Path:
    """Where this clone keeps the agent's worktree, as git fleet-list says."""
    return Path(next(a["worktree"] for a in json.loads(sb.fleet("list", "--json").out) if a["agent"] == agent))


def test_the_orchestrator_cancels_an_open_task_and_what_waits_for_it_is_named(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "Add refunds")
    sb.fleet("task", "add", "Document refunds", "--depends", "1")
    sb.fleet("task", "add", "Something else")
    res = sb.fleet("task", "cancel", "1", "--reason", "refunds are dropped")
    result = sb.repo / "results/task-001-result.md"
    assert res.out == f"{result}\n"
    meta, body = front_matter(result, result.read_text())
    assert (meta["status"], meta["title"], body) == ("cancelled", "Add refunds", "refunds are dropped\n")
    dependent = sb.repo / "tasks/task-002-document-refunds.md"
    assert "warning: task-002 depends on task-001 and cannot be claimed now" in res.err
    assert f"take task-001 out of the depends: line of {dependent}" in res.err
    assert sb.fleet("task", "list", "--status", "cancelled").out.splitlines() == ["task-001  cancelled  -  Add refunds"]
    listed = {t["name"]: t for t in json.loads(sb.fleet("task", "list", "--json").out)}
    assert (listed["task-001"]["status"], listed["task-001"]["result"]) == ("cancelled", str(result))
    shown = sb.fleet("task", "show", "1").out
    assert "state: cancelled at " in shown and ": refunds are dropped\n" in shown
    # no worker gets it, nor what waits for it (as after a failure)
    assert sb.fleet("task", "claim", "--agent", "api").out.startswith("task-003\t")
    assert sb.fleet("task", "claim", "--agent", "docs", ok=False).code == 1
    sb.fleet("plan")
    plan = (sb.repo / "master_plan.md").read_text()
    assert "### Cancelled (1)\n\n- [task-001](tasks/task-001-add-refunds.md) Add refunds" in plan
    assert "Document refunds, after task-001 (cancelled)" in plan
    # a task ends once
    res = sb.fleet("task", "cancel", "1", ok=False)
    assert res.code == 1 and "task-001 is cancelled already; there is nothing to cancel" in res.err
    # the hint works: without the dependency, the waiting task can be claimed
    dependent.write_text(dependent.read_text().replace("depends: [1]", "depends: []"))
    assert sb.fleet("task", "claim", "--agent", "docs").out.startswith("task-002\t")


def test_cancelling_a_claimed_task_refuses_its_holder_and_keeps_what_it_sends(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "Add refunds")
    api = worktree(sb, "api")
    sb.fleet("task", "claim", cwd=api)
    sb.fleet("task", "cancel", "1", "--reason", "refunds are dropped")
    assert sb.fleet("task", "list").out.splitlines() == ["task-001  cancelled  api  Add refunds"]
    # the holder, in its worktree, as real processes
    res = sb.run(["git", "fleet-task", "renew", "1"], cwd=api, ok=False)
    assert res.code == 1 and "error: task-001 was cancelled at " in res.err
    assert ": refunds are dropped; 'api' does not hold it any more" in res.err
    assert "hint: stop working on it" in res.err and "Traceback" not in res.err
    res = sb.run(["git", "fleet-task", "done", "1", "--result-file", "-"], cwd=api, ok=False,
                 input="Half done: the endpoint is in orders.py\n")
    kept = sb.repo / "results/task-001-unrecorded-api-1.md"
    assert res.code == 1 and "error: task-001 was cancelled at " in res.err
    assert f"hint: nothing is lost: this result is kept at {kept}" in res.err
    meta, body = front_matter(kept, kept.read_text())
    assert (meta["status"], meta["agent"], meta["attempt"]) == ("done", "api", "1")
    assert body == "Half done: the endpoint is in orders.py\n"
    res = sb.run(["git", "fleet-task", "fail", "1", "--reason", "no longer wanted"], cwd=api, ok=False)
    assert res.code == 1 and f"kept at {sb.repo / 'results/task-001-unrecorded-api-2.md'}" in res.err
    res = sb.run(["git", "fleet-task", "release", "1"], cwd=api, ok=False)
    assert res.code == 1 and "task-001 was cancelled" in res.err
    # the outcome is still the cancel; the orchestrator finds what was kept
    meta, _ = front_matter(sb.repo / "results/task-001-result.md", (sb.repo / "results/task-001-result.md").read_text())
    assert (meta["status"], meta["holder"]) == ("cancelled", "api")
    shown = json.loads(sb.fleet("task", "show", "1", "--json").out)
    assert shown["status"] == "cancelled" and shown["unrecorded"] == [
        str(kept), str(sb.repo / "results/task-001-unrecorded-api-2.md")]
    assert f"kept aside: {kept}" in sb.fleet("task", "show", "1").out


def test_only_the_orchestrator_cancels_or_removes_tasks(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "one")
    for what, args in (("cancel a task", ["cancel", "1"]), ("remove a task", ["rm", "1"])):
        res = sb.run(["git", "fleet-task", *args], cwd=worktree(sb, "api"), ok=False)  # its worktree
        assert res.code == 1 and f"error: agent 'api' cannot {what}" in res.err
        assert "git fleet-task release ID" in res.err and "git fleet-task fail ID" in res.err
        res = sb.run(["git", "fleet-task", *args], env={"FLEET_AGENT": "docs"}, ok=False)  # its session
        assert res.code == 1 and f"error: agent 'docs' cannot {what}" in res.err
    assert sb.fleet("task", "list").out.splitlines() == ["task-001  open  -  one"]


def test_rm_deletes_only_a_task_nobody_claimed_or_waits_for(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "Add refunds")
    sb.fleet("task", "add", "Document refunds", "--depends", "1")
    sb.fleet("task", "add", "Typo in the tilte")
    spec = sb.repo / "tasks/task-003-typo-in-the-tilte.md"
    assert sb.fleet("task", "rm", "3").out == f"removed task-003 ({spec})\n"
    assert not spec.exists()
    assert [t["name"] for t in json.loads(sb.fleet("task", "list", "--json").out)] == ["task-001", "task-002"]
    assert sb.fleet("task", "add", "Typo in the title").out == "task-004\n"  # its id is not given out again
    res = sb.fleet("task", "rm", "1", ok=False)
    assert res.code == 1 and "task-002 depends on task-001" in res.err and "cancel it instead" in res.err
    sb.fleet("task", "claim", "--agent", "api")
    res = sb.fleet("task", "rm", "1", ok=False)
    assert res.code == 1 and "task-001 has been claimed (attempt 1): 'api' holds it" in res.err
    assert "git fleet-task cancel 1" in res.err
    sb.fleet("task", "cancel", "4")
    res = sb.fleet("task", "rm", "4", ok=False)
    assert res.code == 1 and "task-004 is cancelled; its spec stays with its result" in res.err
    assert sb.fleet("task", "rm", "99", ok=False).code == 2
    assert [t["name"] for t in json.loads(sb.fleet("task", "list", "--json").out)] == ["task-001", "task-002", "task-004"]


def test_a_cancel_and_the_holders_done_at_once_end_each_task_once(bus_repo: Sandbox) -> None:
    sb = bus_repo
    for i in range(1, 5):
        sb.fleet("task", "add", f"task {i}")
        sb.fleet("task", "claim", "--agent", "api")
    procs = {}
    for i in range(1, 5):
        procs[i] = (sb.spawn(["git", "fleet-task", "done", str(i), "--agent", "api", "--result-file", "-"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE),
                    sb.spawn(["git", "fleet-task", "cancel", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    errs = {i: (done.communicate(f"result {i}\n", timeout=60)[1], cancel.communicate(timeout=60)[1])
            for i, (done, cancel) in procs.items()}  # (every process ended before anything is checked)
    for i, (done, cancel) in procs.items():
        done_err, cancel_err = errs[i]
        result = sb.repo / f"results/task-{i:03d}-result.md"
        meta, body = front_matter(result, result.read_text())
        kept = list((sb.repo / "results").glob(f"task-{i:03d}-unrecorded-*.md"))
        if meta["status"] == "done":  # the holder's result was linked first: the cancel is refused
            assert (done.returncode, cancel.returncode, body, kept) == (0, 1, f"result {i}\n", [])
            assert "nothing to cancel" in cancel_err or "nothing was cancelled" in cancel_err
        else:  # the cancel was first: the holder is refused, and its result kept
            assert (meta["status"], done.returncode, cancel.returncode) == ("cancelled", 1, 0)
            assert "was cancelled" in done_err and [p.read_text().endswith(f"result {i}\n") for p in kept] == [True]


def test_a_done_whose_end_comes_after_a_cancel_decided_is_refused_and_kept(bus_repo: Sandbox) -> None:
    """A holder's done stopped just before its end is linked; a cancel decides meanwhile (its
    result written, its attempt gone); the done then links its end where the cancel's was: the
    result file outranks it, and the done is refused with its result kept (both said they won)."""
    sb = bus_repo
    sb.fleet("task", "add", "refunds")
    sb.fleet("task", "claim", "--agent", "api")
    (sb.root / "late.md").write_text("late result\n")
    done, marker = paused(sb, "done-ending", ["done", "1", "--agent", "api", "--result-file", str(sb.root / "late.md")])
    sb.fleet("task", "cancel", "1", "--reason", "not needed")
    marker.unlink()
    out, err = done.communicate(timeout=60)
    assert done.returncode == 1 and "task-001 was cancelled" in err and "nothing is lost" in err, err
    shown = json.loads(sb.fleet("task", "show", "1", "--json").out)
    assert shown["status"] == "cancelled"
    assert [Path(p).read_text().endswith("late result\n") for p in shown["unrecorded"]] == [True]


def test_a_spec_broken_by_hand_after_the_claim_never_costs_the_holder_its_result(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "Add refunds")
    api = worktree(sb, "api")
    sb.fleet("task", "claim", cwd=api)
    spec = sb.repo / "tasks/task-001-add-refunds.md"
    spec.write_text("---\ntitle: Add refunds\nthis line is wrong\n---\n")
    broken = f"warning: {spec}:3: expected 'key: value', found 'this line is wrong'"
    res = sb.run(["git", "fleet-task", "renew", "1"], cwd=api)  # the holder keeps its lease meanwhile
    assert broken in res.err and "hint: the lease is renewed all the same" in res.err
    res = sb.run(["git", "fleet-task", "done", "1", "--result-file", "-"], cwd=api, input="Endpoint added in orders.py\n")
    result = sb.repo / "results/task-001-result.md"
    assert res.out == f"{result}\n"
    assert broken in res.err
    assert "hint: the result is recorded all the same; the spec of task-001 was changed by hand" in res.err
    meta, body = front_matter(result, result.read_text())
    assert (meta["status"], meta["agent"], meta["title"]) == ("done", "api", "Add refunds")  # the title, from the claim
    assert body == "Endpoint added in orders.py\n"
    assert json.loads(sb.fleet("task", "show", "1", "--json").out)["status"] == "done"

    # a holder whose lease lapsed meanwhile is refused, told where the spec is broken, and its result is kept
    sb.fleet("task", "add", "Write the docs")
    sb.fleet("task", "claim", "--agent", "docs", "--lease", "1s")
    spec = sb.repo / "tasks/task-002-write-the-docs.md"
    text = spec.read_text()
    spec.write_text(text.replace("priority: 0", "priority: high"))
    line = text.split("\n").index("priority: 0") + 1
    time.sleep(1.2)
    res = sb.run(["git", "fleet-task", "fail", "2", "--agent", "docs", "--reason", "blocked on the API"], ok=False)
    kept = sb.repo / "results/task-002-unrecorded-docs-1.md"
    assert res.code == 1 and "error: the lease of task-002 (attempt 1) has lapsed; 'docs' does not hold it" in res.err
    assert f"error: {spec}:{line}: priority: 'high' is not a number" in res.err
    assert f"hint: nothing is lost: this result is kept at {kept}" in res.err
    assert front_matter(kept, kept.read_text())[1] == "blocked on the API\n"


# -- a task ends once, whoever ends it; rm races, kills and broken specs ------------------------------

def paused(sb: Sandbox, point: str, args: list[str], **kw: object) -> tuple[subprocess.Popen[str], Path]:
    """A real `git fleet-task ...` stopped at a named point."""
    return sb.paused(["git", "fleet-task", *args], point, **kw)


def go_on(proc: subprocess.Popen[str], marker: Path) -> tuple[int, str, str]:
    marker.unlink()
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def killed(sb: Sandbox, proc: subprocess.Popen[str], marker: Path) -> None:
    sb.kill_group(proc)
    marker.unlink()


def status_of(result: Path) -> str:
    return str(front_matter(result, result.read_text())[0]["status"])


def rm_racing(sb: Sandbox, n: int, other: Callable[[int], list[str]]) -> dict[int, tuple[Result, Result]]:
    """`git fleet-task rm ID` and another task command about ID started at once, for tasks 1..n
    (added first): what each of the two did, by id."""
    for i in range(1, n + 1):
        sb.fleet("task", "add", f"task {i}")
    procs = {i: (sb.spawn(["git", "fleet-task", "rm", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE),
                 sb.spawn(["git", "fleet-task", *other(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE))
             for i in range(1, n + 1)}

    def result(proc: subprocess.Popen[str]) -> Result:
        out, err = proc.communicate(timeout=60)
        return Result(proc.returncode, out, err)

    return {i: (result(rm), result(them)) for i, (rm, them) in procs.items()}


def test_rm_and_cancel_at_once_end_each_task_once(bus_repo: Sandbox) -> None:
    """`rm ID & cancel ID &`: exactly one of them succeeds; the other exits 1 saying what won."""
    sb = bus_repo
    ran = rm_racing(sb, 12, lambda i: ["cancel", str(i)])
    listed = {t["name"]: t["status"] for t in json.loads(sb.fleet("task", "list", "--json").out)}
    for i, (rm, cancel) in ran.items():
        rm_err, cancel_err = rm.err, cancel.err
        name, result = f"task-{i:03d}", sb.repo / f"results/task-{i:03d}-result.md"
        specs = list((sb.repo / "tasks").glob(f"{name}-*.md"))
        assert "Traceback" not in rm_err + cancel_err
        assert sorted([rm.code, cancel.code]) == [0, 1], (i, rm_err, cancel_err)
        if rm.code == 0:  # removed: no spec, and the one outcome says so
            assert (specs, status_of(result), name in listed) == ([], "removed", False)
            assert f"error: {name} was removed" in cancel_err, cancel_err  # (just now, or before it looked)
        else:  # cancelled: its spec stays with its result
            assert (len(specs), status_of(result), listed[name]) == (1, "cancelled", "cancelled")
            assert f"error: {name} is cancelled" in rm_err and ("it was not removed" in rm_err
                                                               or "its spec stays with its result" in rm_err), rm_err
    assert not list((sb.repo / "tasks/.state").glob("*.claim-*"))  # rm's claims go once it decided


def test_a_cancel_while_rm_decides_is_settled_by_the_result_link(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "one")
    sb.fleet("task", "add", "two")
    # rm has claimed task 1 and not decided: the cancel links first, so rm is refused
    rm, marker = paused(sb, "rm-marked", ["rm", "1"])
    assert sb.fleet("task", "claim", "--agent", "api").out.startswith("task-002\t")  # rm keeps workers off task 1
    assert sb.run(["git", "fleet-task", "cancel", "1", "--reason", "not wanted"]).code == 0
    code, out, err = go_on(rm, marker)
    assert (code, out) == (1, "")
    assert "error: task-001 is cancelled: it ended just now; it was not removed" in err
    assert f"hint: see {sb.repo / 'results/task-001-result.md'}" in err
    assert (sb.repo / "tasks/task-001-one.md").exists()
    assert sb.fleet("task", "show", "1").out.split("\n")[1] == "state: cancelled at " + \
        front_matter(sb.repo / "results/task-001-result.md", (sb.repo / "results/task-001-result.md").read_text())[0][
            "finished"] + ": not wanted"  # (no attempt of rm's is left in its history)
    # rm has decided (its result is linked) and not deleted the spec yet: the cancel is refused
    sb.fleet("task", "add", "three")
    rm, marker = paused(sb, "rm-ended", ["rm", "3"])
    res = sb.run(["git", "fleet-task", "cancel", "3"], ok=False)
    assert res.code == 1 and "error: task-003 was removed already; there is nothing to cancel" in res.err
    assert go_on(rm, marker)[:2] == (0, f"removed task-003 ({sb.repo / 'tasks/task-003-three.md'})\n")
    res = sb.run(["git", "fleet-task", "cancel", "3"], ok=False)
    assert res.code == 1 and "error: task-003 was removed at " in res.err and "its spec is deleted" in res.err
    assert status_of(sb.repo / "results/task-003-result.md") == "removed"


def test_a_killed_rm_leaves_nothing_stuck(bus_repo: Sandbox) -> None:
    sb = bus_repo
    for title in ("one", "two", "three", "four"):
        sb.fleet("task", "add", title)
    # killed after it claimed the task, before it decided: the task is as it was, at once
    for tid in ("1", "2"):
        killed(sb, *paused(sb, "rm-marked", ["rm", tid]))
    assert sb.run(["git", "fleet-task", "list"]).out.splitlines()[:2] == ["task-001  open  -  one", "task-002  open  -  two"]
    assert json.loads(sb.fleet("task", "show", "1", "--json").out)["claimed_by"] is None
    assert sb.run(["git", "fleet-task", "rm", "1"]).out == f"removed task-001 ({sb.repo / 'tasks/task-001-one.md'})\n"
    assert sb.run(["git", "fleet-task", "claim", "--agent", "api"]).out.startswith("task-002\t")  # no lease to wait out
    res = sb.run(["git", "fleet-task", "rm", "2"], ok=False)
    assert res.code == 1 and "task-002 has been claimed (attempt 2): 'api' holds it" in res.err  # a real claim counts
    # killed after it decided, before the spec went: the task is removed; the next rm or listing deletes the spec
    killed(sb, *paused(sb, "rm-ended", ["rm", "3"]))
    assert (sb.repo / "tasks/task-003-three.md").exists()
    res = sb.run(["git", "fleet-task", "show", "3"])
    assert "state: removed" in res.out
    assert sb.run(["git", "fleet-task", "rm", "3"]).out == f"removed task-003 ({sb.repo / 'tasks/task-003-three.md'})\n"
    assert not (sb.repo / "tasks/task-003-three.md").exists()
    killed(sb, *paused(sb, "rm-ended", ["rm", "4"]))
    assert (sb.repo / "tasks/task-004-four.md").exists()
    assert [t["name"] for t in json.loads(sb.run(["git", "fleet-task", "list", "--json"]).out)] == ["task-002"]
    assert not (sb.repo / "tasks/task-004-four.md").exists()
    res = sb.run(["git", "fleet-task", "rm", "4"], ok=False)
    assert res.code == 1 and "error: task-004 was removed at " in res.err and "Traceback" not in res.err
    assert [status_of(sb.repo / f"results/task-00{i}-result.md") for i in (1, 3, 4)] == ["removed"] * 3


def test_add_refuses_a_dependency_no_task_could_get_past(bus_repo: Sandbox) -> None:
    sb = bus_repo
    for title in ("open one", "failed one", "cancelled one", "removed one"):
        sb.fleet("task", "add", title)
    sb.fleet("task", "claim", "--agent", "api")
    sb.fleet("task", "claim", "--agent", "api")
    sb.fleet("task", "fail", "2", "--agent", "api", "--reason", "cannot")
    sb.fleet("task", "cancel", "3")
    sb.fleet("task", "rm", "4")
    res = sb.run(["git", "fleet-task", "add", "after nothing", "--depends", "99"], ok=False)
    assert res.code == 2 and "error: task 99 (a dependency) does not exist" in res.err  # a wrong id: misuse
    for tid, how in (("2", "is failed"), ("3", "is cancelled"), ("4", "was removed")):
        res = sb.run(["git", "fleet-task", "add", "after it", "--depends", "1", "--depends", tid], ok=False)
        assert res.code == 1 and f"error: task-00{tid} (a dependency) {how} at " in res.err
        assert ": a task that waits for it could never be claimed" in res.err
        assert f"hint: add it without --depends {tid}" in res.err
    assert [p.name for p in sorted((sb.repo / "tasks").glob("*.md"))] == ["task-001-open-one.md", "task-002-failed-one.md",
                                                                          "task-003-cancelled-one.md"]
    assert sb.run(["git", "fleet-task", "add", "after the open one", "--depends", "1"]).out == "task-005\n"


def test_rm_and_add_depends_at_once_never_leave_a_task_waiting_for_nothing(bus_repo: Sandbox) -> None:
    sb = bus_repo
    ran = rm_racing(sb, 10, lambda i: ["add", f"after {i}", "--depends", str(i)])
    tasks = json.loads(sb.fleet("task", "list", "--json").out)
    ids = {t["id"] for t in tasks}
    assert [(t["name"], t["depends"]) for t in tasks if not set(t["depends"]) <= ids] == []
    for i, (rm, add) in ran.items():
        rm_err, add_err = rm.err, add.err
        assert sorted([rm.code, add.code]) == [0, 1], (i, rm_err, add_err)  # one of them, never both
        assert "Traceback" not in rm_err + add_err
        if rm.code == 0:
            assert f"error: task-{i:03d} (a dependency) was removed" in add_err, add_err
        else:
            assert f"depends on task-{i:03d}" in rm_err, rm_err


def test_rm_and_add_depends_in_either_order_of_their_steps(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "one")
    sb.fleet("task", "add", "two")
    # add has written its spec and not checked again: rm, reading the specs, sees it and is refused
    add, marker = paused(sb, "add-written", ["add", "after one", "--depends", "1"])
    res = sb.run(["git", "fleet-task", "rm", "1"], ok=False)
    assert res.code == 1 and "error: task-003 depends on task-001" in res.err
    assert go_on(add, marker)[:2] == (0, "task-003\n")
    # rm has claimed the task and not decided: add waits for it, and is refused when it removes the task
    rm, marker = paused(sb, "rm-marked", ["rm", "2"])
    add = sb.spawn(["git", "fleet-task", "add", "after two", "--depends", "2"], stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE)
    time.sleep(0.5)
    assert add.poll() is None  # waiting for the rm to decide
    assert go_on(rm, marker)[0] == 0
    out, err = add.communicate(timeout=60)
    assert (add.returncode, out) == (1, "") and "error: task-002 (a dependency) was removed at " in err
    assert [t["name"] for t in json.loads(sb.fleet("task", "list", "--json").out)] == ["task-001", "task-003"]
    assert sb.fleet("task", "add", "next").out == "task-004\n"  # (refused before it took an id)


def test_rm_reads_what_a_broken_spec_waits_for(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "Add refunds")
    sb.fleet("task", "add", "Document refunds", "--depends", "1")
    sb.fleet("task", "add", "Unrelated")
    spec = sb.repo / "tasks/task-002-document-refunds.md"
    text = spec.read_text()
    spec.write_text(text.replace("priority: 0", "priority: 0\nthis line is wrong"))  # broken, its depends readable
    assert json.loads(sb.fleet("task", "show", "2", "--json").out)["status"] == "invalid"
    res = sb.run(["git", "fleet-task", "rm", "1"], ok=False)
    assert res.code == 1 and "error: task-002 depends on task-001" in res.err
    spec.write_text(text.replace("depends: [1]", "depends: [1, one]"))  # what it waits for cannot be told
    for tid in ("1", "3"):
        res = sb.run(["git", "fleet-task", "rm", tid], ok=False)
        assert res.code == 1
        assert f"error: cannot tell whether task-002 depends on task-00{tid}: its spec cannot be read" in res.err
        assert f"error: {spec}:" in res.err and "hint: fix it (git fleet-doctor lists where)" in res.err
        assert "Traceback" not in res.err
    spec.write_text(text.replace("depends: [1]", "depends: []"))
    sb.run(["git", "fleet-task", "rm", "3"])


def test_a_missing_dependency_is_marked_in_show_plan_and_doctor(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "one")
    sb.fleet("task", "add", "two")
    sb.fleet("task", "add", "after both", "--depends", "1", "--depends", "2")
    (sb.repo / "tasks/task-001-one.md").unlink()  # deleted by hand
    spec = sb.repo / "tasks/task-003-after-both.md"
    assert "after: task-001 (missing), task-002\n" in sb.fleet("task", "show", "3").out
    sb.fleet("plan")
    assert "after both, after task-001 (missing), task-002" in (sb.repo / "master_plan.md").read_text()
    out = sb.fleet("doctor", ok=None).out
    assert "task-003 waits for task-001 (missing), task-002: it can never be claimed" in out
    assert f"take 1 out of the depends: line of {spec}" in out
    # one written back by hand after task-002 was removed
    spec.write_text(spec.read_text().replace("depends: [1, 2]", "depends: []"))
    sb.fleet("task", "rm", "2")
    spec.write_text(spec.read_text().replace("depends: []", "depends: [2]"))
    assert "after: task-002 (removed)\n" in sb.fleet("task", "show", "3").out


def test_a_multi_line_reason_is_shown_on_one_line_and_forges_nothing(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "Add refunds")
    api = worktree(sb, "api")
    sb.fleet("task", "claim", cwd=api)
    reason = "refunds are dropped\n---\nstatus: done\nagent: api\n---\nsee the notes"
    sb.run(["git", "fleet-task", "cancel", "1", "--reason", reason])
    result = sb.repo / "results/task-001-result.md"
    meta, body = front_matter(result, result.read_text())
    assert (meta["status"], set(meta)) == ("cancelled", {"task", "title", "status", "holder", "attempt", "finished"})
    assert body == reason + "\n"  # the reason as given, after the front matter
    joined = "refunds are dropped --- status: done agent: api --- see the notes"
    res = sb.run(["git", "fleet-task", "done", "1", "--result-file", "-"], cwd=api, ok=False, input="half\n")
    errors = [line for line in res.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: task-001 was cancelled at {meta['finished']}: {joined}; 'api' does not hold it any more"]
    assert all(line.startswith(("error:", "hint:")) for line in res.err.splitlines())
    kept = sb.repo / "results/task-001-unrecorded-api-1.md"
    kept_meta, _ = front_matter(kept, kept.read_text())
    assert kept_meta["status"] == "done" and kept_meta["unrecorded"] == errors[0].removeprefix("error: ")
    shown = sb.fleet("task", "show", "1").out.splitlines()
    assert shown[1] == f"state: cancelled (attempt 1, api) at {meta['finished']}: {joined}"
    # nor can a title: its lines are joined too
    sb.run(["git", "fleet-task", "add", "Two lines\nagent: docs\npriority: 9"])
    spec = next((sb.repo / "tasks").glob("task-002-*.md"))
    spec_meta, _ = front_matter(spec, spec.read_text())
    assert (spec_meta["title"], spec_meta.get("agent"), spec_meta["priority"]) == ("Two lines agent: docs priority: 9",
                                                                                   None, "0")


def test_a_held_task_whose_spec_is_broken_stays_the_holders(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "Add refunds")
    sb.fleet("task", "add", "Lapsing")
    api = worktree(sb, "api")
    sb.run(["git", "fleet-task", "claim"], cwd=api)
    sb.run(["git", "fleet-task", "claim", "--agent", "docs", "--lease", "1s"])
    spec = sb.repo / "tasks/task-001-add-refunds.md"
    spec.write_text(spec.read_text().replace("priority: 0", "priority: high"))
    # the brief, and the FLEET_TASK ({task}) of its commands
    assert sb.run(["git", "fleet-run", "api", "--", "sh", "-c", 'echo "$FLEET_TASK"']).out == "task-001\n"
    brief = (api / ".fleet/brief.md").read_text()
    assert f"Claimed by you: task-001 Add refunds ({spec})" in brief
    time.sleep(1.2)
    out = sb.fleet("doctor", ok=False).out
    assert f"fix {spec}: 'api' holds task-001 and goes on with it" in out and "fix or remove" not in out
    assert "task-002: the lease of 'docs' has lapsed (attempt 1)" in out
    assert "renew" not in out  # renew needs a live lease: it would be refused
    assert sb.run(["git", "fleet-task", "renew", "2", "--agent", "docs"], ok=False).code == 1


def test_a_held_task_whose_spec_is_broken_teleports_with_its_holder(bus_repo: Sandbox) -> None:
    sb = bus_repo
    hub, there = sb.root / "hub.git", sb.root / "m2" / "repo"
    sb.git("init", "-q", "--bare", "-b", "main", str(hub))
    sb.git("remote", "add", "origin", str(hub))
    sb.git("push", "-q", "origin", "main")
    (sb.root / "m2").mkdir()
    sb.git("clone", "-q", str(hub), str(there), cwd=sb.root)
    sb.git("fleet-init", cwd=there)
    sb.fleet("task", "add", "Add refunds")
    sb.run(["git", "fleet-task", "claim", "--agent", "api"])
    spec = sb.repo / "tasks/task-001-add-refunds.md"
    spec.write_text(spec.read_text().replace("priority: 0", "priority: high"))
    sb.run(["git", "fleet-teleport", "push", "api"])
    assert "1 claimed task(s)" in sb.run(["git", "fleet-teleport", "pull", "api"], cwd=there).out
    shown = json.loads(sb.run(["git", "fleet-task", "show", "1", "--json"], cwd=there).out)
    assert (shown["status"], shown["claimed_by"], shown["title"]) == ("invalid", "api", "Add refunds")
    res = sb.run(["git", "fleet-task", "done", "1", "--agent", "api"], cwd=there)
    assert f"warning: {there / 'tasks/task-001-add-refunds.md'}:" in res.err
    assert json.loads(sb.run(["git", "fleet-task", "show", "1", "--json"], cwd=there).out)["status"] == "done"


def test_a_result_that_cannot_be_read_is_neither_done_nor_claimable(bus_repo: Sandbox) -> None:
    """It was taken for a done task: what it waits for went ahead on nothing. It is listed as
    invalid, naming the file, and what depends on it stays blocked."""
    sb = bus_repo
    sb.run(["git", "fleet-task", "add", "first"])
    sb.run(["git", "fleet-task", "add", "second", "--depends", "1"])
    sb.run(["git", "fleet-task", "claim", "--agent", "api"])
    sb.run(["git", "fleet-task", "done", "1", "--agent", "api", "--result-file", "-"], input="ok\n")
    result = sb.repo / "results/task-001-result.md"
    result.write_bytes(b"---\nstatus: done\n\xff\xfe broken\n")
    rows = {t["name"]: t for t in json.loads(sb.run(["git", "fleet-task", "list", "--json"]).out)}
    assert rows["task-001"]["status"] == "invalid" and str(result) in rows["task-001"]["error"]
    assert "the result cannot be read" in rows["task-001"]["error"]
    res = sb.run(["git", "fleet-task", "claim", "--agent", "docs"], ok=False)
    assert res.code == 1 and "no task can be claimed" in res.err
