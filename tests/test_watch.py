"""git fleet-watch: the picture printed once (--once, --json), and the live screen in a real tmux
pane on a private server, read with capture-pane and driven with send-keys, while the fleet
changes by real commits, real hook events (the command the agent CLI's settings run) and real
task claims."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import Sandbox

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")


def hook_event(sb: Sandbox, agent: str, payload: dict[str, Any]) -> None:
    """Run the hook that Claude Code's settings in the agent's worktree name for this event, with
    the JSON Claude Code sends it, as Claude Code would."""
    worktree = sb.root / f"repo-{agent}"
    settings = json.loads((worktree / ".claude/settings.local.json").read_text())
    event = payload["hook_event_name"]
    [command] = [h["command"] for group in settings["hooks"][event] for h in group["hooks"]]
    body = {"session_id": f"s-{agent}", "transcript_path": str(sb.root / "t.jsonl"), "cwd": str(worktree), **payload}
    subprocess.run(["sh", "-c", command], cwd=worktree, input=json.dumps(body), text=True, check=True,
                   env={**os.environ, "CLAUDE_PROJECT_DIR": str(worktree)})


def asks(sb: Sandbox, agent: str, message: str) -> None:
    hook_event(sb, agent, {"hook_event_name": "Notification", "notification_type": "permission_prompt",
                           "message": message})


@pytest.fixture
def fleet3(fleet_repo: Sandbox) -> Sandbox:
    """api and web, each one commit ahead in its zone; a checkpoint of both."""
    sb = fleet_repo
    sb.add_agent("api", "src/backend/**")
    sb.add_agent("web", "src/frontend/**")
    sb.fleet("checkpoint", "add", "phase-1", "--agent", "api", "--agent", "web")
    sb.git("add", ".gitfleet.toml")
    sb.git("commit", "-qm", "the checkpoint")
    sb.commit(sb.root / "repo-api", {"src/backend/api.py": "def api(): return 2\n"}, "api v2")
    sb.commit(sb.root / "repo-web", {"src/frontend/app.js": "app(2)\n"}, "web v2")
    return sb


def test_once_and_json_show_who_needs_you_what_conflicts_and_what_is_ready(fleet3: Sandbox) -> None:
    sb = fleet3
    # the base changes what api changed: api would conflict with it; web edits outside its zone
    sb.commit(sb.repo, {"src/backend/api.py": "def api(): return 3\n"}, "base: api v3")
    (sb.root / "repo-web/src/backend/x.py").write_text("x\n")
    for title in ("one", "two", "three"):
        sb.fleet("task", "add", title)
    sb.fleet("task", "claim", "--agent", "api")
    sb.fleet("task", "claim", "--agent", "web", "--lease", "1s")
    asks(sb, "web", "Claude needs your permission to use Bash")
    time.sleep(1.1)  # (web's lease lapses)
    picture = json.loads(sb.fleet("watch", "--json").out)
    # one schema: every key of status --json's object and of its rows, and of ps --json's rows
    status, ps = json.loads(sb.fleet("status", "--json").out), json.loads(sb.fleet("ps", "--json").out)
    assert set(status) <= set(picture) and {"checkpoints", "bus"} <= set(picture)
    rows = {r["agent"]: r for r in picture["agents"]}
    for row in status["agents"] + ps:
        assert set(row) <= set(rows[row["agent"]]), row
        assert {k: rows[row["agent"]][k] for k in row if k not in ("since", "state_since")} == \
            {k: v for k, v in row.items() if k not in ("since", "state_since")}
    assert [r["agent"] for r in picture["agents"]] == ["web", "api"]  # who needs you first
    assert (rows["web"]["state"], rows["web"]["message"]) == ("needs you", "Claude needs your permission to use Bash")
    assert rows["web"]["out_of_zone"] == ["src/backend/x.py"] and rows["web"]["dirty"] == 1
    assert rows["api"]["task"]["name"] == "task-001" and rows["web"]["task"] is None
    assert (rows["api"]["ahead"], rows["api"]["behind"]) == (1, 2)  # (the checkpoint's commit, and v3)
    assert {"agents": ["api", "main"], "paths": ["src/backend/api.py"]} in picture["conflicts"]
    [cp] = picture["checkpoints"]
    assert cp["checkpoint"] == "phase-1" and cp["state"] == "blocked"
    assert "api would conflict in src/backend/api.py" in cp["why"]
    bus = picture["bus"]
    assert (bus["open"], bus["claimed"], bus["done"]) == (2, 1, 0)
    assert [(t["name"], t["agent"]) for t in bus["lapsed"]] == [("task-002", "web")]
    # the same picture, as text
    text = sb.fleet("watch", "--once").out.splitlines()
    assert text[0] == "fleet on main: 2 agents, 1 needs you"
    assert text[2].split()[:4] == ["web", "needs", "you:", "Claude"] and text[3].startswith("    asks: Claude needs")
    assert "  api and the base: src/backend/api.py" in text
    assert any(line.startswith("  phase-1      blocked      api would conflict") for line in text)
    assert text[-1] == "BUS  2 open, 1 claimed, 0 done; lapsed: task-002 (web)"
    assert all(len(line) <= 100 for line in text)
    res = sb.fleet("watch", "--once", "--json", ok=False)
    assert res.code == 2 and res.err.startswith("error: --once and --json") and "Traceback" not in res.err


def test_a_refresh_computes_again_only_what_its_inputs_changed(fleet3: Sandbox) -> None:
    """The watch's picture in process: a moved tip merges again only in the pairs it is in; a
    worktree is scanned again only when its files or index changed; the checkpoints' readiness
    follows the main worktree's own changes when everything is looked at again."""
    from git_fleet.fleet import Fleet
    from git_fleet.picture import Picture

    sb = fleet3
    sb.add_agent("docs", "docs/**")
    sb.commit(sb.root / "repo-docs", {"docs/guide.md": "# guide 2\n"}, "docs v2")
    picture = Picture(Fleet.here(sb.repo))
    first = picture.refresh()
    assert len(picture.memo.pairs) == 6  # 3 agents against the base, 3 pairs
    dirty = dict(picture.memo.dirty)
    sb.commit(sb.root / "repo-api", {"src/backend/more.py": "x = 1\n"}, "api: more")
    (sb.root / "repo-web/src/frontend/new.js").write_text("new\n")  # (no event told: not seen yet)
    again = picture.refresh({"refs"})
    assert len(picture.memo.pairs) == 9  # api's new tip against the base, web and docs; no other merge
    assert all(picture.memo.dirty[a] is dirty[a] for a in ("web", "docs"))  # not scanned again
    rows = {r["agent"]: r for r in again["agents"]}
    assert rows["api"]["ahead"] == 2 and rows["web"]["dirty"] == 0
    rows = {r["agent"]: r for r in picture.refresh({"tree:web"})["agents"]}
    assert rows["web"]["dirty"] == 1 and picture.memo.dirty["docs"] is dirty["docs"]
    assert first["checkpoints"][0]["state"] == "ready"
    # the base's worktree changed where the merge lands (no event says so): told at the next look
    (sb.repo / "src/backend/api.py").write_text("mine, uncommitted\n")
    assert picture.refresh({"refs"})["checkpoints"][0]["state"] == "ready"  # (kept: the tips are the same)
    [cp] = picture.refresh(None)["checkpoints"]
    assert cp["state"] == "blocked" and "src/backend/api.py" in cp["why"], cp["why"]


def test_the_events_say_what_changed(fleet3: Sandbox) -> None:
    """Real inotify on the fleet's files: each change names what it makes stale, and nothing else."""
    from git_fleet.fleet import Fleet
    from git_fleet.watch_events import Sources

    sb = fleet3
    sources = Sources(Fleet.here(sb.repo))

    def after(change: Callable[[], object]) -> set[str]:
        sources.changed()  # (what came before)
        change()
        deadline = time.time() + 5
        seen: set[str] = set()
        while time.time() < deadline:
            time.sleep(0.2)
            more = sources.changed()
            if not more and seen:
                return seen
            seen |= more
        return seen

    try:
        assert after(lambda: (sb.root / "repo-web/src/frontend/new.js").write_text("x\n")) == {"tree:web"}
        assert after(lambda: sb.commit(sb.root / "repo-api", {"src/backend/b.py": "b\n"})) == {"refs", "tree:api"}
        moved = sb.root / "elsewhere"
        moved.mkdir()
        assert after(lambda: moved.rename(sb.root / "repo-web/src/frontend/moved")) == {"tree:web"}
        assert after(lambda: (sb.root / "repo-web/src/frontend/moved/in.js").write_text("x\n")) == {"tree:web"}
        # (and perhaps "sessions": the fleet notes in each agent's directory that its brief changed)
        assert after(lambda: sb.fleet("task", "add", "refunds")) - {"sessions"} == {"bus"}
        assert after(lambda: asks(sb, "api", "may I?")) == {"sessions"}
        assert after(lambda: (sb.repo / ".gitfleet.toml").write_text((sb.repo / ".gitfleet.toml").read_text())) \
            == {"config"}
        assert after(lambda: (sb.root / "repo-web/node_modules").mkdir()) == {"tree:web"}
        assert after(lambda: (sb.root / "repo-web/node_modules/x.js").write_text("x\n")) == set()  # (skipped)
    finally:
        sources.close()


# -- the live screen, in tmux ---------------------------------------------------------------------


class Pane:
    """The watch in a tmux pane of `cols` x `rows`, its screen read as the person sees it."""

    def __init__(self, sb: Sandbox, session: str, cols: int = 80, rows: int = 24, env: dict[str, str] | None = None,
                 command: str = "git fleet-watch"):
        self.session = session
        extra = [x for k, v in (env or {}).items() for x in ("-e", f"{k}={v}")]
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(cols), "-y", str(rows), *extra,
                        "-c", str(sb.repo), command], check=True)

    def flag(self, name: str) -> str:
        return subprocess.run(["tmux", "display-message", "-p", "-t", f"={self.session}:", f"#{{{name}}}"],
                              capture_output=True, text=True).stdout.strip()

    def screen(self, colours: bool = False) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", *(["-e"] if colours else []), "-t", f"={self.session}:"],
                              capture_output=True, text=True).stdout

    def until(self, check: Callable[[str], Any], what: str, timeout: float = 15) -> str:
        deadline = time.time() + timeout
        while True:
            text = self.screen()
            if check(text):
                return text
            assert time.time() < deadline, f"the screen never showed {what}:\n{text}"
            time.sleep(0.1)

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", f"={self.session}:", *keys], check=True)

    def row(self, agent: str) -> list[str]:
        """The agent's row, split into words ([] while the screen does not show it)."""
        return next((line[1:].split() for line in self.screen().splitlines() if line[1:].startswith(agent + " ")), [])


@needs_tmux
def test_the_screen_follows_commits_states_and_claims(fleet3: Sandbox, tmux: None) -> None:
    sb = fleet3
    pane = Pane(sb, "watch")
    pane.until(lambda s: "phase-1      ready" in s, "the checkpoint ready")
    assert pane.row("api")[:2] == ["api", "stopped"] and pane.screen().splitlines()[-1].startswith("↑↓ agent")
    sb.commit(sb.root / "repo-api", {"src/backend/more.py": "x = 1\n"}, "api: more")
    pane.until(lambda s: pane.row("api")[4:5] == ["2"], "api 2 ahead")
    asks(sb, "web", "Claude needs your permission to use Bash")
    text = pane.until(lambda s: "1 needs you" in s, "web needing its person")
    lines = text.splitlines()
    assert lines[2].startswith(">web       needs you:") or lines[2].startswith(" web       needs you:")
    assert "web needs you: Claude needs your permission to use Bash" in lines[-1]
    sb.fleet("task", "add", "refunds")
    sb.fleet("task", "claim", "--agent", "api")
    pane.until(lambda s: pane.row("api")[3:4] == ["task-001"], "api's claimed task")
    hook_event(sb, "web", {"hook_event_name": "Stop"})
    pane.until(lambda s: pane.row("web")[1:2] == ["idle"], "web idle")
    # an agent added to the config is on screen: the fleet is read again
    sb.add_agent("docs", "docs/**")
    pane.until(lambda s: any(line[1:].startswith("docs ") for line in s.splitlines()), "the new agent")
    pane.keys("?")
    pane.until(lambda s: s.startswith("KEYS"), "the keys")
    pane.keys("x")
    pane.until(lambda s: s.startswith("fleet on main"), "the fleet again")
    pane.keys("q")
    pane.until(lambda s: "fleet on main" not in s, "the screen closed")


@needs_tmux
def test_m_merges_the_checkpoint_asked_for_and_a_refusal_leaves_the_base(fleet3: Sandbox, tmux: None) -> None:
    sb = fleet3
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text() + '\n[checkpoints.api-only]\nagents = ["api"]\n'
                   '\n[checkpoints.web-only]\nagents = ["web"]\ntest = "echo web tests fail; exit 1"\n')
    sb.git("commit", "-qam", "two more checkpoints")
    base = sb.head("main")
    pane = Pane(sb, "watch")
    pane.until(lambda s: "web-only     ready" in s and "api-only     ready" in s, "three ready checkpoints")
    pane.keys("m")
    bottom = "".join(pane.until(lambda s: "merge checkpoint which?" in s, "the question").splitlines()[-3:])
    assert "1) phase-1  2) api-only  3) web-only" in bottom
    pane.keys("3")
    text = pane.until(lambda s: "merging checkpoint web-only: refused" in s, "the refusal")
    assert "web tests fail" in "".join(text.splitlines()[-3:])
    assert sb.head("main") == base
    pane.keys("m", "2")
    pane.until(lambda s: "merging checkpoint api-only: done" in s, "the merge")
    assert sb.head("main") != base and sb.git("merge-base", "--is-ancestor", "fleet/api", "main", ok=None).code == 0
    pane.until(lambda s: "api-only     merged" in s, "api-only merged")
    # nothing asked is nothing done
    pane.keys("s")
    pane.until(lambda s: "sync every agent behind the base? y/N" in s, "the sync question")
    pane.keys("n")
    pane.until(lambda s: "not done" in s.splitlines()[-1], "no sync")
    pane.keys("s", "y")
    pane.until(lambda s: "syncing: done" in s, "the sync")
    assert sb.git("merge-base", "--is-ancestor", "main", "fleet/web", ok=None).code == 0
    pane.keys("q")


@needs_tmux
def test_up_shows_the_watch_and_enter_goes_to_the_agents_pane(fleet3: Sandbox, tmux: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sb = fleet3
    cfg = sb.repo / ".gitfleet.toml"  # (a stand-in for the agents' CLI: a process that waits)
    cfg.write_text(cfg.read_text().replace('command = "claude --session-id {session_id} --name {session} --model {model}"',
                                           'command = "exec sleep 600"'))
    sb.git("commit", "-qam", "stand-in agents")
    sb.fleet("up", "--detach", "--stagger", "0")
    session = json.loads(sb.fleet("ps", "--json").out)[0]["tmux"]
    from test_tmux import Terminal, clients, until  # (a real terminal attached to the session)

    term = Terminal(["tmux", "attach-session", "-t", f"={session}:orchestrator"], sb.repo)
    try:
        pane = Pane.__new__(Pane)
        pane.session = session
        until(lambda: "phase-1" in subprocess.run(["tmux", "capture-pane", "-p", "-t", f"={session}:orchestrator"],
                                                  capture_output=True, text=True).stdout, term)
        subprocess.run(["tmux", "send-keys", "-t", f"={session}:orchestrator", "j", "Enter"], check=True)
        web = json.loads(sb.fleet("ps", "--json").out)[1]
        assert web["agent"] == "web"
        assert until(lambda: [c for c in clients() if c[1] == web["pane"]], term)
        # outside tmux, Enter says the command that goes there
        outside = Pane(sb, "outside", command="env -u TMUX git fleet-watch")
        outside.until(lambda s: "phase-1" in s, "the picture")
        outside.keys("Enter")
        outside.until(lambda s: "outside tmux: attach to it with git fleet-attach api" in s, "the command")
        subprocess.run(["tmux", "kill-session", "-t", "=outside"], check=True)
        # a watch suspended (Ctrl-Z) leaves the window to what the person runs next: down keeps it
        orchestrator = f"={session}:orchestrator"

        def runs(command: str) -> bool:
            return subprocess.run(["tmux", "display-message", "-p", "-t", orchestrator, "#{pane_current_command}"],
                                  capture_output=True, text=True).stdout.strip() == command

        subprocess.run(["tmux", "send-keys", "-t", orchestrator, "C-z"], check=True)
        subprocess.run(["tmux", "send-keys", "-t", orchestrator, "sleep 300", "Enter"], check=True)
        until(lambda: runs("sleep"), term)
        assert "closed" not in sb.fleet("down", "--yes").err and runs("sleep")
        # and back in the foreground, the watch counts as idle: down closes what up opened
        subprocess.run(["tmux", "send-keys", "-t", orchestrator, "C-c"], check=True)
        until(lambda: not runs("sleep"), term)
        subprocess.run(["tmux", "send-keys", "-t", orchestrator, "fg", "Enter"], check=True)
        until(lambda: "phase-1" in subprocess.run(["tmux", "capture-pane", "-p", "-t", orchestrator],
                                                  capture_output=True, text=True).stdout, term)
        assert "closed" in sb.fleet("down", "--yes").err
    finally:
        term.close()


@needs_tmux
def test_no_color_and_enter_on_an_agent_that_is_not_running(fleet3: Sandbox, tmux: None) -> None:
    sb = fleet3
    asks(sb, "web", "Claude needs your permission to use Bash")
    coloured = Pane(sb, "coloured", env={"NO_COLOR": ""})  # (the tests' environment sets it: empty is unset)
    plain = Pane(sb, "plain", env={"NO_COLOR": "1"})
    coloured.until(lambda s: "1 needs you" in s, "web needing its person")
    plain.until(lambda s: "1 needs you" in s, "web needing its person")
    assert "\x1b[31m" in coloured.screen(colours=True) or "\x1b[1;31m" in coloured.screen(colours=True)
    assert not [c for c in ("[31m", "[32m", "[33m", "[35m", ";31m") if c in plain.screen(colours=True)]
    # Enter on an agent that is not running says how to start it
    plain.keys("Enter")
    plain.until(lambda s: "web is not running in tmux: start it with git fleet-up web" in s, "the hint")


@needs_tmux
def test_it_rings_or_tells_tmux_when_an_agent_starts_needing_you(fleet3: Sandbox, tmux: None, tmp_path: Path) -> None:
    sb = fleet3
    bell, quiet = Pane(sb, "bell"), Pane(sb, "quiet", command="git fleet-watch --notify off")
    told = Pane(sb, "told", command="git fleet-watch --notify tmux")
    from test_tmux import Terminal  # (tmux shows a message to a client: one is attached)

    term = Terminal(["tmux", "attach-session", "-t", "=told"], sb.repo)
    try:
        for pane in (bell, quiet, told):
            pane.until(lambda s: "CHECKPOINTS" in s, "the picture")
        assert bell.flag("window_bell_flag") == "0"
        pwned = tmp_path / "pwned"
        asks(sb, "web", f"may I? #(touch {pwned})")  # (an agent's message is text, never a tmux format)
        for pane in (bell, quiet, told):
            pane.until(lambda s: "1 needs you" in s, "web needing its person")
        deadline = time.time() + 5
        while bell.flag("window_bell_flag") != "1":
            assert time.time() < deadline, "the watch never rang"
            time.sleep(0.1)
        assert quiet.flag("window_bell_flag") == "0" and told.flag("window_bell_flag") == "0"
        client = subprocess.run(["tmux", "list-clients", "-F", "#{client_name}"], capture_output=True,
                                text=True).stdout.split()[0]
        messages = subprocess.run(["tmux", "show-messages", "-t", client], capture_output=True, text=True).stdout
        assert f"fleet: web needs you: may I? #(touch {pwned})" in messages
        assert not pwned.exists()
    finally:
        term.close()


@needs_tmux
def test_q_while_a_merge_runs_leaves_it_to_finish(fleet3: Sandbox, tmux: None) -> None:
    sb = fleet3
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('agents = ["api", "web"]', 'agents = ["api", "web"]\ntest = "sleep 8"'))
    sb.git("commit", "-qam", "a slow test")
    # a git_fleet of the main worktree's own is never what the screen's commands run
    sb.write_files({"git_fleet/__init__.py": "", "git_fleet/cli/__init__.py": "",
                    "git_fleet/cli/commands.py": "open('hijacked', 'w')\n"})
    base = sb.head("main")
    pane = Pane(sb, "watch", command="git fleet-watch; sleep 600")
    pane.until(lambda s: "phase-1      ready" in s, "the checkpoint ready")
    pane.keys("m", "y")
    pane.until(lambda s: "merging checkpoint phase-1 …" in s, "the merge running")
    pane.keys("j")  # the screen goes on meanwhile
    pane.until(lambda s: s.splitlines()[3].startswith(">web"), "the cursor on web")
    pane.keys("q")
    pane.until(lambda s: "still runs; it finishes on its own. q again to quit" in s, "the warning")
    pane.keys("q")
    pane.until(lambda s: "fleet on main" not in s, "the screen closed")
    deadline = time.time() + 30
    while sb.head("main") == base:
        assert time.time() < deadline, "the merge never landed"
        time.sleep(0.2)
    time.sleep(0.5)
    assert not (sb.repo / "hijacked").exists() and not list((sb.repo / ".git/fleet").glob("crashes/*"))


@needs_tmux
def test_a_terminal_curses_cannot_drive_gets_the_picture_once(fleet3: Sandbox, tmux: None) -> None:
    pane = Pane(fleet3, "watch", command="TERM=no-such-terminal git fleet-watch; echo exit $?; sleep 600")
    text = pane.until(lambda s: "exit " in s, "the end")
    assert text.startswith("warning: no live screen on this terminal (TERM=no-such-terminal")
    assert "CHECKPOINTS" in text and "exit 0" in text and "Traceback" not in text


@needs_tmux
def test_up_watch_pane_puts_it_above_the_shell_and_none_nowhere(fleet3: Sandbox, tmux: None) -> None:
    sb = fleet3
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('command = "claude --session-id {session_id} --name {session} --model {model}"',
                                           'command = "exec sleep 600"'))
    sb.fleet("up", "--detach", "--stagger", "0", "--watch", "pane")
    session = json.loads(sb.fleet("ps", "--json").out)[0]["tmux"]
    listing = subprocess.run(["tmux", "list-panes", "-t", f"={session}:orchestrator", "-F", "#{pane_id}"],
                             capture_output=True, text=True).stdout.split()
    assert len(listing) == 2
    deadline = time.time() + 15
    while "CHECKPOINTS" not in subprocess.run(["tmux", "capture-pane", "-p", "-t", listing[0]],
                                              capture_output=True, text=True).stdout:
        assert time.time() < deadline, "no watch in the upper pane"
        time.sleep(0.1)
    sb.fleet("down", "--yes")
    sb.fleet("up", "--detach", "--stagger", "0", "--watch", "none")
    session = json.loads(sb.fleet("ps", "--json").out)[0]["tmux"]
    time.sleep(1)
    assert "CHECKPOINTS" not in subprocess.run(["tmux", "capture-pane", "-p", "-t", f"={session}:orchestrator"],
                                               capture_output=True, text=True).stdout


def test_status_keeps_commit_facts_and_never_trusts_them_past_a_zone_change(fleet3: Sandbox) -> None:
    """git fleet-status keeps what it computed of commits (fleet/facts.json): the same answer
    from it; a zone changed since is judged again; a file that cannot be read is computed again."""
    sb = fleet3
    (sb.root / "repo-web/src/backend/x.py").write_text("x\n")
    sb.git("add", "src/backend/x.py", cwd=sb.root / "repo-web")
    sb.git("commit", "-qm", "outside its zone", "--no-verify", cwd=sb.root / "repo-web")
    first = json.loads(sb.fleet("status", "--json").out)
    facts = sb.repo / ".git/fleet/facts.json"
    assert facts.is_file() and json.loads(sb.fleet("status", "--json").out) == first
    rows = {r["agent"]: r for r in first["agents"]}
    assert rows["web"]["out_of_zone"] == ["src/backend/x.py"]
    sb.fleet("set", "web", "--zone", "src/frontend/**", "--zone", "src/backend/x.py", "--allow-overlap")
    rows = {r["agent"]: r for r in json.loads(sb.fleet("status", "--json").out)["agents"]}
    assert rows["web"]["out_of_zone"] == []
    facts.write_text("{not json")
    assert json.loads(sb.fleet("status", "--json").out)["agents"] == json.loads(sb.fleet("status", "--json").out)["agents"]
    assert json.loads(facts.read_text())["version"] == 1
