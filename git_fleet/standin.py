"""A stand-in coding agent: a scripted program that works the way a coding agent works in the fleet,
through the same interfaces (no model, no network). Started in an agent's worktree with the
fleet's environment (git fleet-run, git fleet-up), it

- reads its brief ($FLEET_BRIEF: its zone, branch and the bus),
- claims the next task meant for it (git fleet-task claim),
- makes the edits its plan gives for that task, in its worktree,
- commits; when the commit hook refuses paths outside its zone, it reads the refusal, takes
  those paths out of its work (as the hook's hint says) and commits what is its own,
- writes its result (git fleet-task done), and claims the next task until there is none.

    python -m git_fleet.standin PLAN.json [--pace SECONDS]
    python -m git_fleet.standin --drain BUS_DIR NAME [--pad N]
    python -m git_fleet.standin --drain-fleet NAME [LEASE]

The second form is a worker at the bus alone (the tests' and benchmarks' many concurrent
workers): it claims and finishes tasks through the bus until none is left, each result
"result of task-NNN by NAME" (and N bytes of padding), and prints the ids it finished. The
third is the same worker at the bus of the fleet here (the files, or the remote of a fleet that
spans machines), printing each id as it is claimed ("claimed N SECONDS", what the claim took) and
finished ("done N").

PLAN.json: {"tasks": [{"edits": {"path": "text", ...}, "message": "commit message",
"result": "what was done"}, ...]}, one entry per task it will claim, in order. Each line it
says goes to standard output and to .fleet/standin.log in its worktree. Exit 0 when every task
it claimed is done, 1 when something failed (said on the last line).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .bus import Bus
from .check import STATUS_WORDS, unquote

# the commit hook names each refused path as "error:   <what> <path>  (<whose>)" (check.describe),
# the path as check.quote shows it: in double quotes and C-escaped when it has a space, quote or
# control character
_WHAT = sorted({*STATUS_WORDS.values(), "renamed away", "renamed to", "carried into"}, key=len, reverse=True)
_REFUSED = re.compile(r'^error:\s+(?:[0-9a-f]{12}: )?(?:' + "|".join(map(re.escape, _WHAT))
                      + r')\s+("(?:[^"\\]|\\.)*"|.+?)  \(')


class Standin:
    def __init__(self, plan: dict[str, Any], pace: float, where: Path):
        self.plan, self.pace, self.where = plan, pace, where
        self.name = os.environ.get("FLEET_AGENT", where.name)
        self.log = where / ".fleet" / "standin.log"

    def say(self, line: str) -> None:
        print(line, flush=True)
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        time.sleep(self.pace)  # a coding agent takes its time: the others get theirs

    def git(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=self.where, input=input, capture_output=True, text=True)

    def run(self) -> int:
        brief = Path(os.environ.get("FLEET_BRIEF", self.where / ".fleet" / "brief.md"))
        section = brief.read_text(encoding="utf-8").split("## Your zone", 1)[-1].split("\n## ", 1)[0]
        zone = [line[3:-1] for line in section.splitlines() if line.startswith("- `")]
        self.say(f"read my brief: zone {', '.join(zone)} on {os.environ.get('FLEET_BRANCH', 'my branch')}")
        for step in self.plan.get("tasks", []):
            claim = self.git("fleet-task", "claim", "--json")
            if claim.returncode != 0:
                self.say("no task for me: " + (claim.stderr.strip().splitlines() or ["none open"])[0])
                return 0 if "no task" in claim.stderr else 1
            task = json.loads(claim.stdout)
            self.say(f"claimed {task['name']}: {task['title']}")
            for path, text in step["edits"].items():
                target = self.where / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
                self.say(f"edited {path}")
            if not self.commit(step["message"]):
                self.git("fleet-task", "release", task["name"])  # back on the bus, for someone who can
                self.say(f"gave {task['name']} back: I could not commit my work")
                return 1
            done = self.git("fleet-task", "done", task["name"], "--result-file", "-", input=step["result"] + "\n")
            if done.returncode != 0:
                self.say("could not record my result: " + done.stderr.strip())
                return 1
            self.say(f"done {task['name']}: result in {done.stdout.strip()}")
        self.say("finished: nothing left for me")
        return 0

    def commit(self, message: str) -> bool:
        self.git("add", "-A")
        if self.git("diff", "--cached", "--quiet").returncode == 0:
            self.say("nothing to commit: my edits are there already")
            return True
        first = self.git("commit", "-q", "-m", message)
        if first.returncode == 0:
            self.say(f"committed: {message}")
            return True
        refused = [unquote(m.group(1)) for line in first.stderr.splitlines() if (m := _REFUSED.match(line))]
        lines = [line for line in first.stderr.splitlines() if line.strip()]
        self.say("the commit hook refused my commit: " + (lines[0].removeprefix("error: ") if lines else "?"))
        if not refused:
            self.say("I cannot tell what to take out; stopping")
            return False
        for line in lines[1:]:
            if line.startswith("error:   "):
                self.say("  it said: " + line.removeprefix("error:").strip())
        for path in refused:
            # as the hint says: out of the commit; and the edit is not mine to make, so it goes too
            self.git("restore", "--staged", "--", path)
            if self.git("cat-file", "-e", f"HEAD:{path}").returncode == 0:
                self.git("restore", "--", path)
            else:
                (self.where / path).unlink(missing_ok=True)
            self.say(f"took {path} out: it is not in my zone; I leave it to its owner")
        again = self.git("commit", "-q", "-m", message)
        if again.returncode != 0:
            self.say("still refused: " + again.stderr.strip())
            return False
        self.say(f"committed what is mine: {message}")
        return True


def drain(root: Path, name: str, pad: int = 0) -> list[int]:
    """Claim and finish tasks on the bus at `root` as `name` until none can be claimed."""
    bus, done = Bus(root), []
    while (t := bus.claim(name)) is not None:
        bus.finish(t.id, name, f"result of {t.name} by {name}\n" + "x" * pad)
        done.append(t.id)
    return done


def drain_fleet(name: str, lease: int | None = None) -> int:
    """`--drain-fleet NAME [LEASE]`: claim (for LEASE seconds) and finish on the bus of the fleet
    here until none can be claimed."""
    # (the third form's only: the fleet's bus, which the others do not load)
    from .errors import FleetError  # (as above)
    from .fleet import Fleet  # (as above)
    from .pause import pause  # (as above)

    bus = Fleet.here().bus()
    try:
        while True:
            began = time.perf_counter()
            t = bus.claim(name, lease)
            if t is None:
                break
            print(f"claimed {t.id} {time.perf_counter() - began:.4f}", flush=True)
            pause("worker-claimed")
            bus.finish(t.id, name, f"result of {t.name} by {name}\n")
            print(f"done {t.id}", flush=True)
    except FleetError as e:
        print(e.render(), file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--drain-fleet"] and len(args) in (2, 3):
        return drain_fleet(args[1], int(args[2]) if len(args) == 3 else None)
    if args[:1] == ["--drain"] and len(args) in (3, 5):
        pad = int(args[4]) if len(args) == 5 and args[3] == "--pad" else 0
        print(" ".join(map(str, drain(Path(args[1]), args[2], pad))))
        return 0
    pace = 0.3
    if "--pace" in args:
        i = args.index("--pace")
        pace = float(args[i + 1])
        del args[i : i + 2]
    if len(args) != 1:
        print("usage: python -m git_fleet.standin PLAN.json [--pace SECONDS]", file=sys.stderr)
        return 2
    where = Path.cwd()
    (where / ".fleet").mkdir(exist_ok=True)
    try:
        plan = json.loads(Path(args[0]).read_text(encoding="utf-8"))
        return Standin(plan, pace, where).run()
    except (OSError, ValueError, KeyError) as e:
        print(f"error: stand-in agent: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
