"""Sandboxed agents in a real fleet (`git fleet-run --sandbox`, `git fleet-set --sandbox`,
`sandbox = true`): the agent's own commit lands on its own branch and the fleet reads it; every
route to another agent's branch, a new branch, an existing object or its git dir's records is
refused, each shown to work unsandboxed in the same test. Skipped, with the reason, where the
kernel lacks what the sandbox needs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from git_fleet import sandbox
from helpers import Sandbox, git_daemon, private_tmux
from test_machines import publishing

MISSING = sandbox.support().missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"no sandbox on this system: {MISSING}")


def agent_run(sb: Sandbox, agent: str, script: str, *flags: str, ok: bool | None = None) -> tuple[int, str]:
    res = sb.run(["git", "fleet-run", *flags, agent, "--", "sh", "-c", script], ok=ok)
    return res.code, res.err


@pytest.fixture
def fleet(fleet_repo: Sandbox) -> Sandbox:
    """backend (sandboxed: its branch moved to fleet/backend/work) and web (not)."""
    sb = fleet_repo
    sb.add_agent("backend", "src/backend/**")
    sb.add_agent("web", "src/frontend/**")
    res = sb.run(["git", "fleet-set", "backend", "--sandbox", "on"])
    assert res.out == ("backend: its branch fleet/backend is now fleet/backend/work (a ref directory of its own, "
                       "for the sandbox)\n")
    return sb


def test_a_sandboxed_agent_commits_on_its_own_branch_and_the_fleet_reads_it(fleet: Sandbox) -> None:
    sb = fleet
    assert sorted(sb.branches()) == ["fleet/backend/work", "fleet/web", "main"]
    cfg = (sb.repo / ".gitfleet.toml").read_text()
    assert "version = 5" in cfg and 'branch = "fleet/backend/work"' in cfg and "sandbox = true" in cfg
    code, err = agent_run(sb, "backend", "echo 'def api(): return 3' > src/backend/api.py && "
                          "git commit -qam 'backend: v3' && git log -1 --format=%s")
    assert code == 0, err
    store = sb.repo / ".git" / "fleet" / "agents" / "backend" / "objects"
    assert any(p.is_file() for p in store.rglob("*")), "the commit's objects went to the agent's own store"
    status = json.loads(sb.run(["git", "fleet-status", "--json"]).out)
    row = next(a for a in status["agents"] if a["agent"] == "backend")
    assert row["ahead"] == 1
    assert not any(p.is_file() for p in store.rglob("*")), "brought into the repository's store, and dropped"
    assert sb.git("log", "-1", "--format=%s", "fleet/backend/work").out.strip() == "backend: v3"
    assert sb.git("fsck", "--no-dangling").code == 0
    cfg_text = (sb.repo / ".gitfleet.toml").read_text()
    (sb.repo / ".gitfleet.toml").write_text(cfg_text + '\n[checkpoints.one]\nagents = ["backend"]\n')
    sb.run(["git", "fleet-merge", "--checkpoint", "one"])
    assert sb.git("show", "main:src/backend/api.py").out == "def api(): return 3\n"


@pytest.mark.parametrize("route", ["another agent's branch", "a new branch", "the base", "the main worktree",
                                   "another agent's worktree", "the hooks", "the config"])
def test_a_sandboxed_agent_changes_nothing_outside_its_own(fleet: Sandbox, route: str) -> None:
    sb = fleet
    web = sb.root / "repo-web"
    hooks = sb.repo / ".git" / "hooks" / "pre-commit"
    script, look = {
        "another agent's branch": ("git update-ref refs/heads/fleet/web HEAD~0 && git update-ref refs/heads/fleet/web "
                                   "$(git commit-tree -m forged HEAD^{tree})", lambda: sb.head("fleet/web")),
        "a new branch": ("git branch side", lambda: sb.branches()),
        "the base": ("git update-ref refs/heads/main $(git commit-tree -m forged HEAD^{tree})",
                     lambda: sb.head("main")),
        "the main worktree": (f"echo widened >> {sb.repo / '.gitfleet.toml'}",
                              lambda: (sb.repo / ".gitfleet.toml").read_text()),
        "another agent's worktree": (f"echo x > {web / 'src/frontend/app.js'}",
                                     lambda: (web / "src/frontend/app.js").read_text()),
        "the hooks": (f"echo 'exit 0' > {hooks}", lambda: hooks.read_text()),
        "the config": ("git config --local core.hooksPath /dev/null",
                       lambda: (sb.repo / ".git" / "config").read_text()),
    }[route]
    before = look()
    code, err = agent_run(sb, "backend", script)
    assert code != 0 and look() == before, err
    assert "Read-only file system" in err or "Permission denied" in err, err
    code, err = agent_run(sb, "backend", script, "--no-sandbox")  # (the same route, unsandboxed: it works)
    assert code == 0 and look() != before, err


def test_a_branch_in_a_ref_directory_not_the_agents_own_is_moved_or_refused(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("api", "src/backend/**", extra=("--branch", "team/api"))
    res = sb.run(["git", "fleet-run", "--sandbox", "api", "--", "true"], ok=False)
    assert res.code == 1 and "its branch team/api is in refs/heads/team/, a ref directory that is not its own" in res.err
    res = sb.run(["git", "fleet-set", "api", "--sandbox", "on"], ok=False)
    assert "name it like fleet/api/work" in res.err and "team/api" in sb.branches()
    sb.add_agent("web", "src/frontend/**")
    res = sb.run(["git", "fleet-set", "web", "sandbox", "maybe"], ok=False)
    assert res.code == 2 and "error: cannot set 'sandbox maybe'" in res.err
    sb.run(["git", "fleet-set", "web", "sandbox", "on"])  # (alone in refs/heads/fleet/ now: moved all the same)
    assert "fleet/web/work" in sb.branches() and "fleet/web" not in sb.branches()
    res = sb.run(["git", "fleet-add", "docs", "--zone", "docs/**", "--branch", "fleet/web/docs"], ok=False)
    assert "in the ref directory of sandboxed agent 'web'" in res.err
    assert sb.run(["git", "fleet-run", "web", "--", "git", "branch", "fleet/web/mine"]).code == 0  # (its own)
    res = sb.run(["git", "fleet-run", "web", "--", "sh", "-c", f"echo x >> {sb.repo / 'README.md'}"], ok=False)
    assert "Read-only file system" in res.err
    sb.run(["git", "fleet-set", "web", "sandbox", "off"])  # (its branch stays where it is)
    assert sb.run(["git", "fleet-run", "web", "--", "sh", "-c", f"echo x >> {sb.repo / 'README.md'}"]).code == 0
    assert "sandbox = false" in (sb.repo / ".gitfleet.toml").read_text() and "fleet/web/work" in sb.branches()


def test_its_git_dir_says_where_things_are_and_the_agent_cannot_change_that(fleet: Sandbox) -> None:
    sb = fleet
    admin = Path(sb.git("rev-parse", "--absolute-git-dir", cwd=sb.root / "repo-backend").out.strip())
    for name, script in (("gitdir", f"echo /elsewhere/.git > {admin / 'gitdir'}"),
                         ("commondir", f"echo /elsewhere > {admin / 'commondir'}"),
                         ("config.worktree", f"mv {admin / 'config.worktree'} {admin / 'old'}"),
                         ("config.worktree", "git config -f $(git rev-parse --git-dir)/config.worktree "
                                             "core.fsmonitor 'touch /tmp/pwned'")):
        before = (admin / name).read_bytes()
        code, err = agent_run(sb, "backend", script)
        assert code != 0 and (admin / name).read_bytes() == before, (name, err)
    code, err = agent_run(sb, "backend", "echo x >> src/backend/README.md && git add -A && git commit -qm ok")
    assert code == 0, err  # (its index, HEAD and reflog are its own)


def test_an_existing_object_cannot_be_overwritten_and_a_forged_one_is_never_taken(fleet: Sandbox) -> None:
    sb = fleet
    tree = sb.git("rev-parse", "main^{tree}").out.strip()
    loose = sb.repo / ".git" / "objects" / tree[:2] / tree[2:]
    before = loose.read_bytes()
    code, err = agent_run(sb, "backend", f"chmod u+w {loose}; printf junk > {loose}")
    assert code != 0 and loose.read_bytes() == before, err
    # a file in its own store named after an object nobody wrote yet, holding something else
    future = b"the next version of web's app\n"
    name = hashlib.sha1(b"blob %d\0" % len(future) + future).hexdigest()
    forged = zlib.compress(b"blob 6\0forged")
    store = sb.repo / ".git" / "fleet" / "agents" / "backend" / "objects"
    (store / name[:2]).mkdir(parents=True, exist_ok=True)
    (store / name[:2] / name[2:]).write_bytes(forged)  # (as the agent could, in its own store)
    res = sb.run(["git", "fleet-status"])
    assert "warning: agent 'backend'" in res.err and "forged or damaged, dropped" in res.err, res.err
    assert not (store / name[:2] / name[2:]).exists()
    assert sb.git("cat-file", "-e", name, ok=None).code != 0, "a forged object never enters the repository"
    sb.commit(sb.root / "repo-web", {"src/frontend/app.js": future.decode()}, "web: next")
    assert sb.git("cat-file", "blob", name).out.encode() == future


def test_a_checkpoint_test_of_sandboxed_agents_runs_sandboxed(fleet: Sandbox) -> None:
    sb = fleet
    readme = sb.repo / "README.md"
    cfg = sb.repo / ".gitfleet.toml"
    test = f"echo changed-by-the-test >> {readme}; echo ran > ran-here"
    cfg.write_text(cfg.read_text() + f'\n[checkpoints.b]\nagents = ["backend"]\ntest = "{test}"\n'
                   f'\n[checkpoints.w]\nagents = ["web"]\ntest = "{test}"\n')
    code, err = agent_run(sb, "backend", "echo 'def api(): return 4' > src/backend/api.py && git commit -qam v4")
    assert code == 0, err
    sb.commit(sb.root / "repo-web", {"src/frontend/app.js": "app(4)\n"}, "web: v4")
    sb.run(["git", "fleet-merge", "--checkpoint", "b"])  # (the test ran: it wrote its own scratch worktree)
    assert readme.read_text() == "# project\n" and "def api(): return 4" in sb.git("show", "main:src/backend/api.py").out
    sb.run(["git", "fleet-merge", "--checkpoint", "w"])  # web is not sandboxed: its test is not either
    assert readme.read_text() == "# project\nchanged-by-the-test\n"


def test_a_fleet_that_runs_sandboxed_gives_new_agents_a_branch_directory_and_a_sandboxed_setup(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    readme = sb.repo / "README.md"
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace("version = 4", "version = 5").replace("[fleet]\n", "[fleet]\nsandbox = true\n")
                   .replace("[setup]\n", f'[setup]\nrun = "echo setup >> {readme}; echo ok > .fleet-setup"\n'))
    sb.add_agent("docs", "docs/**")
    assert "fleet/docs/work" in sb.branches() and (sb.root / "repo-docs" / ".fleet-setup").exists()
    assert readme.read_text() == "# project\n"
    code, err = agent_run(sb, "docs", f"echo x >> {readme}", "--no-sandbox")
    assert code == 0 and readme.read_text().endswith("x\n"), err


def test_up_sandbox_starts_the_agent_sandboxed_and_its_tmux_server_is_no_door(fleet: Sandbox, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    sb = fleet
    private_tmux(tmp_path, monkeypatch)
    cfg = sb.repo / ".gitfleet.toml"
    door = "tmux new-window -d 'echo through-tmux > {worktree}/../done-by-{agent}'; echo $? > .fleet/tmux-said; "
    cfg.write_text(cfg.read_text().replace(
        'command = "claude --session-id {session_id} --name {session} --model {model}"',
        f'command = "{door}echo up > .fleet/ran; exec sleep 600"'))
    try:
        sb.run(["git", "fleet-up", "--detach", "--stagger", "0", "backend"])
        sb.run(["git", "fleet-up", "--detach", "--stagger", "0", "--no-sandbox", "web"])
        for name in ("backend", "web"):
            ran = sb.root / f"repo-{name}" / ".fleet" / "ran"
            deadline = time.time() + 15
            while not ran.exists():
                assert time.time() < deadline, f"{name} never started"
                time.sleep(0.05)
        time.sleep(0.5)
        assert (sb.root / "repo-backend" / ".fleet" / "tmux-said").read_text().strip() != "0"
        assert not (sb.root / "done-by-backend").exists(), "the person's tmux server did the sandboxed agent's write"
        assert (sb.root / "done-by-web").exists()  # (the same route, unsandboxed: it works)
        rows = {r["agent"]: r for r in json.loads(sb.run(["git", "fleet-ps", "--json"]).out)}
        assert rows["backend"]["sandboxed"] is True and rows["web"]["sandboxed"] is False
        rows = {line.split()[0]: line.split() for line in sb.run(["git", "fleet-ps"]).out.splitlines()[1:]}
        assert "yes" in rows["backend"] and "no" not in rows["backend"] and "no" in rows["web"]
    finally:
        subprocess.run(["tmux", "kill-server"], capture_output=True)


def test_a_process_left_behind_stays_in_the_sandbox(fleet: Sandbox) -> None:
    sb = fleet
    target = sb.repo / "README.md"
    flag = sb.root / "repo-backend" / "left-behind-ran"
    # it outlives `git fleet-run`, then tries, while the agent's run has ended
    script = (f"(sleep 0.5; echo later >> {target}; echo $? > {flag}) > /dev/null 2>&1 & "
              "echo started")
    code, err = agent_run(sb, "backend", script)
    assert code == 0, err
    deadline = time.time() + 10
    while not flag.exists() or not flag.read_text().endswith("\n"):
        assert time.time() < deadline, "the process left behind never ran"
        time.sleep(0.05)
    assert flag.read_text().strip() != "0" and target.read_text() == "# project\n"
    code, err = agent_run(sb, "backend", f"echo later >> {target}", "--no-sandbox")
    assert code == 0 and target.read_text().endswith("later\n"), err


def test_on_the_bus_a_sandboxed_agent_claims_and_ends_its_own_and_nothing_of_anothers(fleet: Sandbox) -> None:
    sb = fleet
    sb.run(["git", "fleet-task", "add", "Backend work", "--agent", "backend"])
    sb.run(["git", "fleet-task", "add", "Web work", "--agent", "web"])
    sb.run(["git", "fleet-task", "claim", "--agent", "web"], cwd=sb.root / "repo-web")
    code, err = agent_run(sb, "backend", "git fleet-task claim && echo finished | git fleet-task done 1 --result-file -")
    assert code == 0, err
    tasks = {t["id"]: t for t in json.loads(sb.run(["git", "fleet-task", "list", "--json"]).out)}
    assert (tasks[1]["status"], tasks[2]["status"], tasks[2]["claimed_by"]) == ("done", "claimed", "web")
    state, results = sb.repo / "tasks/.state", sb.repo / "results"
    web_claim = state / "task-002.claim-1"
    assert web_claim.is_symlink(), sorted(p.name for p in state.iterdir())
    web_record = state / "agents/web/task-002.claim-1"
    attacks = [f"rm {web_claim}", f"echo '{{}}' > {web_record}", f"touch {web_record}", f"chmod 000 {web_record}",
               f"chmod 000 {state / 'agents/web'}", f"touch {state / '.gitignore'}",
               f"{sys.executable} -c \"import os; os.setxattr('{web_record}', 'user.x', b'1')\"",
               f"printf -- '---\\nstatus: done\\nagent: web\\n---\\nforged\\n' > {results / 'task-002-result.md'}",
               f"mv {state / 'agents/web'} {state / 'agents/gone'}"]
    for attack in attacks:
        code, err = agent_run(sb, "backend", attack)
        assert code != 0, (attack, err)
    # what it may do there, make symlinks, makes nothing count
    code, err = agent_run(sb, "backend", f"ln -s agents/backend/task-002.claim-2 {state / 'task-002.claim-2'} && "
                          f"ln -s agents/web/task-002-result.md {results / 'task-002-result.md'}")
    assert code == 0, err
    tasks = {t["id"]: t for t in json.loads(sb.run(["git", "fleet-task", "list", "--json"]).out)}
    assert (tasks[2]["status"], tasks[2]["claimed_by"]) == ("claimed", "web")
    sb.run(["sh", "-c", "echo 'web done' | git fleet-task done 2 --result-file -"], cwd=sb.root / "repo-web")
    code, err = agent_run(sb, "backend", f"rm -f {state / 'task-001.claim-1'}", "--no-sandbox")  # (the route works)
    assert code == 0 and not (state / "task-001.claim-1").exists(), err


@pytest.mark.parametrize("how", ["a symbolic ref", "a symlink"])
def test_a_branch_made_to_name_another_ref_leads_the_fleet_nowhere(fleet: Sandbox, how: str) -> None:
    """The agent may write its branch's ref (its own): made a symbolic ref or a link to the base
    or another agent's branch, the fleet's moves and deletes would follow it."""
    sb = fleet
    ref = sb.repo / ".git/refs/heads/fleet/backend/work"
    target = sb.repo / ".git/refs/heads/fleet/web"
    write = (f"printf 'ref: refs/heads/fleet/web\\n' > {ref}" if how == "a symbolic ref"
             else f"rm {ref} && ln -s {target} {ref}")
    code, err = agent_run(sb, "backend", write)
    assert code == 0 and (ref.is_symlink() or ref.read_text().startswith("ref:")), err  # (its own to write)
    main, web = sb.head("main"), sb.head("fleet/web")
    sb.commit(sb.repo, {"README.md": "# project, v2\n"}, "base moves")
    res = sb.run(["git", "fleet-sync", "backend"], ok=None)
    assert "was a symbolic ref, a link or no file at all" in res.err and not os.path.lexists(ref), res
    assert sb.head("fleet/web") == web and target.is_file() and not target.is_symlink()
    sb.run(["git", "fleet-rm", "--force", "backend"], ok=None)
    assert sb.head("fleet/web") == web and sb.head("main") != main and "main" in sb.branches()


def test_the_reflogs_of_its_branch_are_no_way_out(fleet: Sandbox) -> None:
    sb = fleet
    log = sb.repo / ".git/logs/refs/heads/fleet/backend/work"
    config = sb.repo / ".gitfleet.toml"
    before = config.read_text()
    code, err = agent_run(sb, "backend", f"rm {log} && ln -s {config} {log}")
    assert code != 0 and log.is_file() and not log.is_symlink(), err
    code, err = agent_run(sb, "backend", "echo x >> src/backend/api.py && git commit -qam x && git branch fleet/backend/mine")
    assert code == 0, err  # (its commits append to its branch's reflog; a branch of its own beside it has none)
    sb.commit(sb.repo, {"README.md": "# project, v2\n"}, "base moves")
    sb.run(["git", "fleet-sync", "backend"])
    assert config.read_text() == before and "git-fleet: sync" in log.read_text()


def test_links_in_its_object_store_lead_the_fleet_to_no_other_repository(fleet: Sandbox) -> None:
    sb = fleet
    other = sb.make_repo({"f": "other\n"}, sb.root / "other")
    sb.git("repack", "-q", "-a", "-d", cwd=other)
    sb.commit(other, {"g": "loose\n"}, "loose")
    objects = other / ".git/objects"
    before = sorted(str(p.relative_to(objects)) for p in objects.rglob("*") if p.is_file())
    store = sb.repo / ".git/fleet/agents/backend/objects"
    fans = " ".join(f"ln -s {d} $GIT_OBJECT_DIRECTORY/{d.name};" for d in objects.iterdir() if len(d.name) == 2)
    code, err = agent_run(sb, "backend", f"rm -rf $GIT_OBJECT_DIRECTORY/pack; ln -s {objects / 'pack'} "
                          f"$GIT_OBJECT_DIRECTORY/pack; {fans} mkdir -p $GIT_OBJECT_DIRECTORY/info; "
                          f"echo {objects} > $GIT_OBJECT_DIRECTORY/info/alternates; "
                          "echo y >> src/backend/api.py && git commit -qam y")
    assert code == 0 and (store / "pack").is_symlink(), err
    sb.run(["git", "fleet-status"])
    assert sorted(str(p.relative_to(objects)) for p in objects.rglob("*") if p.is_file()) == before
    assert sb.git("fsck", cwd=other).code == 0 and sb.git("log", "-1", "--format=%s", "fleet/backend/work").out == "y\n"


def test_a_flag_alone_sandboxes_the_agents_checkpoint_test_from_then_on(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("docs", "docs/**", extra=("--branch", "fleet/docs/work"))
    outside = sb.root / "outside.txt"
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text() + f'\n[checkpoints.d]\nagents = ["docs"]\ntest = "echo pwned >> {outside}; true"\n')
    code, err = agent_run(sb, "docs", "echo more >> docs/guide.md && git commit -qam more", "--sandbox")
    assert code == 0, err
    sb.run(["git", "fleet-merge", "--checkpoint", "d"])
    assert not outside.exists() and "more" in sb.git("show", "main:docs/guide.md").out


def test_a_fifo_among_its_reports_keeps_no_command_waiting(fleet: Sandbox) -> None:
    sb = fleet
    events = sb.repo / ".git/fleet/agents/backend/events"
    code, err = agent_run(sb, "backend", f"rm -f {events} {events.parent / 'refused'} && mkfifo {events} "
                          f"{events.parent / 'refused'}")
    assert code == 0, err
    res = sb.run(["timeout", "20", "git", "fleet-ps", "--json"])
    assert next(r for r in json.loads(res.out) if r["agent"] == "backend")["reported"] is False


def test_a_repository_in_its_worktree_runs_nothing_of_the_agents_in_the_fleets_git(fleet: Sandbox) -> None:
    """A repository of the agent's making inside its worktree, recorded as a submodule, with a
    clean filter in its own config: a `git status` that looks inside submodules runs the filter
    where it runs. The fleet's does not look inside."""
    sb = fleet
    ran = sb.root / "filter-ran"
    # (a repository of its own, objects and all: GIT_OBJECT_DIRECTORY, which the sandbox sets, left out)
    inner = (f"git init -q sub && cd sub && git config filter.ev.clean 'touch {ran}; cat' && "
             "echo '* filter=ev' > .gitattributes && echo x > g && git add -A && git commit -qm s && "
             "touch -d 2030-01-01 g")
    code, err = agent_run(sb, "backend", "cd src/backend && env -u GIT_OBJECT_DIRECTORY -u "
                          f"GIT_ALTERNATE_OBJECT_DIRECTORIES sh -c \"{inner}\" && git add sub")
    assert code == 0 and not ran.exists(), err
    sb.run(["git", "fleet-status"])
    sb.run(["git", "fleet-status", "--json"])
    assert not ran.exists(), "the agent's filter ran outside its sandbox"
    sb.git("status", "--ignore-submodules=none", cwd=sb.root / "repo-backend")  # (a git that looks inside: it runs)
    assert ran.exists()


def test_its_head_made_to_name_another_agents_branch_moves_nothing_of_that_agent(fleet: Sandbox) -> None:
    sb = fleet
    admin = Path(sb.git("rev-parse", "--absolute-git-dir", cwd=sb.root / "repo-backend").out.strip())
    code, err = agent_run(sb, "backend", f"printf 'ref: refs/heads/fleet/web\\n' > {admin / 'HEAD'}")
    assert code == 0, err  # (its HEAD is its own to write)
    web = sb.head("fleet/web")
    sb.commit(sb.repo, {"README.md": "# project, v2\n"}, "base moves")
    res = sb.run(["git", "fleet-sync", "web"], ok=False)
    assert "branch fleet/web is checked out in 2 worktrees" in res.err and sb.head("fleet/web") == web
    code, err = agent_run(sb, "backend", f"ln -sf {sb.repo / '.gitfleet.toml'} {admin / 'logs/HEAD'}")
    assert code != 0 and not (admin / "logs/HEAD").is_symlink(), err


def test_a_fifo_in_its_ref_directory_keeps_no_git_of_the_fleet_waiting(fleet: Sandbox) -> None:
    sb = fleet
    fifo = sb.repo / ".git/refs/heads/fleet/backend/fifo"
    code, err = agent_run(sb, "backend", f"mkfifo {fifo}")
    assert code == 0, err  # (its ref directory is its own to fill)
    res = sb.run(["timeout", "20", "git", "fleet-status"])
    assert "fleet/backend/fifo was a symbolic ref, a link or no file at all" in res.err and not os.path.lexists(fifo)


def test_its_git_file_pointed_at_a_rebase_of_another_branch_stops_no_move_of_that_branch(fleet: Sandbox) -> None:
    sb = fleet
    code, err = agent_run(sb, "backend", "git checkout -q --detach && mkdir -p .fake/rebase-merge && "
                          "echo refs/heads/fleet/web > .fake/rebase-merge/head-name && mv .git .git.real && "
                          "echo 'gitdir: .fake' > .git")
    assert code == 0, err
    web = sb.head("fleet/web")
    sb.commit(sb.repo, {"README.md": "# project, v2\n"}, "base moves")
    sb.run(["git", "fleet-sync", "web"])
    assert sb.head("fleet/web") != web and sb.git("merge-base", "--is-ancestor", "main", "fleet/web").code == 0


def test_a_sandboxed_agent_in_a_fleet_across_machines_claims_and_reports_through_the_remote(fleet: Sandbox) -> None:
    sb = fleet
    sb.git("add", ".gitfleet.toml")
    sb.git("commit", "-qm", "the fleet")
    hub = sb.root / "hub.git"
    sb.git("init", "-q", "--bare", "-b", "main", str(hub))
    with git_daemon(sb, sb.root) as url:
        sb.git("remote", "add", "origin", f"{url}/hub.git")
        sb.git("push", "-q", "origin", "main")
        port = int(url.rsplit(":", 1)[1])
        cfg = sb.repo / ".gitfleet.toml"
        cfg.write_text(cfg.read_text().replace("[fleet]\n", f"[fleet]\nsandbox_ports = [{port}]\n", 1))
        sb.git("config", "fleet.publishEvery", "0")
        sb.run(["git", "fleet-init", "--remote", "origin"])
        sb.run(["git", "fleet-task", "add", "Backend work", "--agent", "backend"])
        sb.run(["git", "fleet-task", "add", "Web work", "--agent", "web"])
        tracking = sb.git("for-each-ref", "refs/fleet-remote/origin/bus/").out
        code, err = agent_run(sb, "backend", "echo 'def api(): return 4' > src/backend/api.py && "
                              "git commit -qam 'backend: v4' && git fleet-task claim && "
                              "echo finished | git fleet-task done 1 --result-file -")
        assert code == 0, err
        # what it knows of the remote it kept in its own place: the clone's view of the bus is as it
        # was (git fleet-run took the agent's hold for this machine first, outside the sandbox)
        assert sb.git("for-each-ref", "refs/fleet-remote/origin/bus/").out == tracking
        # on the remote: its claim and result, and its branch (task done publishes it first)
        tasks = {t["id"]: t for t in json.loads(sb.run(["git", "fleet-task", "list", "--json"]).out)}
        assert (tasks[1]["status"], tasks[1]["claimed_by"], tasks[2]["status"]) == ("done", "backend", "open")
        sb.run(["git", "fleet-task", "show", "1"])
        assert "finished" in (sb.repo / "results" / "task-001-result.md").read_text()  # (read here, from the remote)
        assert sb.git("log", "-1", "--format=%s", "fleet/backend/work", cwd=hub).out.strip() == "backend: v4"
        # the person's commands bring its objects into the clone's store (status); its next commit,
        # and its state as its hooks report it, still reach the remote from inside its sandbox
        sb.run(["git", "fleet-status"])
        settings = json.loads((sb.root / "repo-backend" / ".claude/settings.local.json").read_text())
        [hook] = [h["command"] for group in settings["hooks"]["Notification"] for h in group["hooks"]]
        asked = sb.root / "repo-backend" / ".fleet" / "asked.json"  # (ignored by git; in its sandbox)
        asked.write_text(json.dumps({"session_id": "s", "cwd": str(sb.root / "repo-backend"),
                                     "hook_event_name": "Notification", "notification_type": "permission_prompt",
                                     "message": "Claude needs your permission to use Bash"}))
        code, err = agent_run(sb, "backend", "echo 'def api(): return 5' > src/backend/api.py && "
                              f"git commit -qam 'backend: v5' && ({hook}) < {asked}")
        assert code == 0, err
        deadline = time.time() + 30
        while "needs you" not in sb.git("show", "refs/fleet/agents/backend:state.json", cwd=hub, ok=None).out or \
                sb.git("log", "-1", "--format=%s", "fleet/backend/work", cwd=hub).out.strip() != "backend: v5":
            assert time.time() < deadline, "its commit and its state did not reach the remote"
            time.sleep(0.2)
        while publishing(sb):
            assert time.time() < deadline, "the publisher did not end"
            time.sleep(0.1)
        own = sb.repo / ".git" / "fleet" / "agents" / "backend"
        assert "refs/fleet-remote/origin/bus/tasks/1" in sb.git("for-each-ref", "--format=%(refname)", "refs/fleet-remote/",
                                                              cwd=own / "meeting.git").out
        # and the clone's own view stays out of its reach (what it may push there, the server's
        # hook judges: git fleet-init --server)
        for attack in ("git update-ref refs/fleet-remote/origin/bus/ids HEAD",
                       f"git -C {sb.repo} fetch -q origin '+refs/fleet/*:refs/fleet-remote/origin/*'"):
            code, err = agent_run(sb, "backend", attack)
            assert code != 0, (attack, err)
