"""The coordination bus on real files, with real concurrent processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from git_fleet.bus import Bus, front_matter
from helpers import Sandbox

WORKER = """
import sys, time
from pathlib import Path
from git_fleet.bus import Bus
bus = Bus(Path(sys.argv[1]))
name = sys.argv[2]
got = []
while True:
    t = bus.claim(name)
    if t is None:
        break
    bus.finish(t.id, name, f"result of {t.name} by {name}\\n" + "x" * 5000)
    got.append(t.id)
print(" ".join(map(str, got)))
"""


@pytest.fixture
def bus_repo(fleet_repo: Sandbox) -> Sandbox:
    fleet_repo.add_agent("api", "src/backend/**")
    fleet_repo.add_agent("docs", "docs/**")
    return fleet_repo


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
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(bus.root), f"w{i}"], stdout=subprocess.PIPE,
                                text=True, env=env) for i in range(8)]
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
