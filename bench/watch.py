"""git fleet-watch on the 100,000-file repository with a fleet of 10 agents (bench/agent_hook.py's,
made once and reused), in one run:

    python bench/watch.py [--runs 5] [--idle 30]

- on screen: the watch runs in a tmux pane of a private server; a commit in an agent's worktree,
  and a state change (the agent CLI's Notification hook, run as Claude Code runs it), are timed
  until capture-pane shows them; beside them, what a person would type instead:
  `git fleet-status --json` and `git fleet-ps --json`, one after the other;
- a refresh where nothing changed (what a timer does), CPU of the process and of the processes
  it starts, beside the first refresh (everything computed);
- what a change recomputes: a moved tip (the merges computed again, of the 55) and a changed
  worktree (the worktrees scanned again, of the 10);
- the watch idle for --idle seconds: its CPU (and its children's) as a share of one core.
Targets (the issue's): on screen within 1 s; a refresh where nothing changed under 50 ms of CPU;
idle under 2% of one core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import agent_hook  # noqa: E402  (the 10-agent fleet on the 100,000-file repository)
import run  # noqa: E402


def cpu_ms() -> float:
    """CPU used so far by this process and its waited-for children, in ms."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime) * 1000


def proc_cpu(pid: int) -> float:
    """CPU of process `pid` and its waited-for children, in seconds (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def until(check, timeout: float = 30.0) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise SystemExit("bench: the screen never showed it")
        time.sleep(0.01)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=30.0)
    args = parser.parse_args()
    main_dir = agent_hook.build()
    agent_hook.current_hooks(main_dir)
    from git_fleet.fleet import Fleet
    from git_fleet.picture import Picture

    os.chdir(main_dir)
    for i in range(10):  # every agent ahead of the base, so that every pair is forecast
        if run.sh("git", "rev-list", "--count", f"main..fleet/a{i}", cwd=main_dir).strip() == "0":
            subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "bench: ahead"], cwd=agent_hook.worktree(i),
                           check=True, env=run.ENV)
    results: list[tuple[str, str]] = []
    # -- in process: what a refresh costs, and what a change recomputes --------------------------
    picture = Picture(Fleet.here(main_dir))
    before = cpu_ms()
    picture.refresh()
    results.append(("first refresh, everything computed (CPU)", f"{cpu_ms() - before:.0f} ms"))
    idle = []
    for _ in range(args.runs):
        before = cpu_ms()
        picture.refresh({"sessions"})
        idle.append(cpu_ms() - before)
    results.append(("a refresh where nothing changed: tmux and the agents' states (CPU)",
                    f"{statistics.median(idle):.1f} ms (max {max(idle):.1f})"))
    wt = agent_hook.worktree(0)
    pairs = len(picture.memo.pairs)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "bench: moved"], cwd=wt, check=True, env=run.ENV)
    scanned = []
    original = picture.fleet.repo.dirty_paths
    picture.fleet.repo.dirty_paths = lambda where: scanned.append(where) or original(where)  # type: ignore[method-assign]
    before = cpu_ms()
    picture.refresh({"refs"})
    results.append(("a moved tip: merges computed again, worktrees scanned again",
                    f"{len(picture.memo.pairs) - pairs} of 55, {len(scanned)} of 10 "
                    f"({cpu_ms() - before:.0f} ms CPU)"))
    scanned.clear()
    (wt / "bench-dirty.txt").write_text("x\n")
    before = cpu_ms()
    picture.refresh({"tree:a0"})
    results.append(("a changed worktree: worktrees scanned again", f"{len(scanned)} of 10 ({cpu_ms() - before:.0f} ms CPU)"))
    (wt / "bench-dirty.txt").unlink()
    # -- the live screen, in tmux --------------------------------------------------------------------
    sockets = tempfile.mkdtemp(prefix="bench-watch-")
    env = {**run.ENV, "TMUX_TMPDIR": sockets}
    env.pop("TMUX", None)

    def tmux(*a: str) -> str:
        return subprocess.run(["tmux", *a], env=env, capture_output=True, text=True).stdout

    watch = shutil.which("git-fleet-watch") or "git-fleet-watch"
    tmux("new-session", "-d", "-s", "w", "-x", "100", "-y", "40", "-c", str(main_dir), "exec " + watch)
    try:
        until(lambda: "CHECKPOINTS" in tmux("capture-pane", "-p", "-t", "w"))

        def ahead(agent: str) -> str:
            for line in tmux("capture-pane", "-p", "-t", "w").splitlines():
                if line[1:].startswith(agent + " "):
                    return line[1:].split()[-4]
            return ""

        commits, states, typed = [], [], []
        commands = agent_hook.settings_commands(wt)
        for k in range(args.runs):
            agent = f"a{k % 10}"
            tree = agent_hook.worktree(k % 10)
            was = ahead(agent)
            start = time.perf_counter()
            subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "bench"], cwd=tree, check=True, env=run.ENV)
            commits.append((time.perf_counter() - start) * 1000 + until(lambda: ahead(agent) not in ("", was)))  # noqa: B023
            event = {"session_id": "bench", "cwd": str(wt), "hook_event_name": "Notification",
                     "notification_type": "permission_prompt", "message": f"bench {k}"}
            start = time.perf_counter()
            subprocess.run(["sh", "-c", commands.get("Notification", commands["PostToolUse"])], cwd=wt,
                           input=json.dumps(event), text=True, env={**env, "CLAUDE_PROJECT_DIR": str(wt)})
            states.append((time.perf_counter() - start) * 1000
                          + until(lambda: f"bench {k}" in tmux("capture-pane", "-p", "-t", "w")))  # noqa: B023
            start = time.perf_counter()
            subprocess.run(["git", "fleet-status", "--json"], cwd=main_dir, capture_output=True, env=env)
            subprocess.run(["git", "fleet-ps", "--json"], cwd=main_dir, capture_output=True, env=env)
            typed.append((time.perf_counter() - start) * 1000)
        results.append(("a commit, until it is on screen", f"{statistics.median(commits):.0f} ms (max {max(commits):.0f})"))
        results.append(("a state change (hook), until it is on screen",
                        f"{statistics.median(states):.0f} ms (max {max(states):.0f})"))
        results.append(("instead: git fleet-status --json and git fleet-ps --json, typed",
                        f"{statistics.median(typed):.0f} ms (max {max(typed):.0f})"))
        pid = int(tmux("display-message", "-p", "-t", "w", "#{pane_pid}").strip())
        time.sleep(2)
        start_cpu, start = proc_cpu(pid), time.perf_counter()
        time.sleep(args.idle)
        share = (proc_cpu(pid) - start_cpu) / (time.perf_counter() - start) * 100
        results.append((f"idle for {args.idle:g} s: CPU of the watch and what it starts", f"{share:.2f}% of one core"))
    finally:
        tmux("kill-server")
        shutil.rmtree(sockets, ignore_errors=True)
    print(f"Machine: {os.uname().machine}, {os.cpu_count()} cores; 10 agents, 100,000 files\n")
    print("| watch benchmark | result |\n|---|---|")
    for name, value in results:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
