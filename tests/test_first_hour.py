"""The first hour (issue 13), as a new user meets it: each rough edge driven through the installed
commands, as the user types them."""

from __future__ import annotations

import json

import pytest

from helpers import Sandbox


@pytest.mark.parametrize("group, names", [("task", "add, cancel, claim, done, fail, list, path, release, renew, rm, show"),
                                          ("teleport", "list, pull, push")])
def test_a_group_without_its_subcommand_says_which_there_are(fleet_repo: Sandbox, group: str, names: str) -> None:
    """Not the whole help page printed as an error: one line naming the subcommands, and a hint."""
    res = fleet_repo.run(["git", f"fleet-{group}"], ok=False)
    assert res.code == 2
    assert res.err == f"error: git fleet-{group} needs a subcommand: {names}\nhint: see 'git fleet-{group} -h'\n"


def test_a_misused_subcommand_points_at_its_own_help(fleet_repo: Sandbox) -> None:
    res = fleet_repo.run(["git", "fleet-task", "add"], ok=False)
    assert res.code == 2 and "error: Missing argument 'TITLE'." in res.err
    assert "hint: see 'git fleet-task add -h'" in res.err


def test_a_negative_stagger_is_refused(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("web", "src/frontend/**")
    res = sb.run(["git", "fleet-up", "--stagger", "-5", "--detach", "web"], ok=False)
    assert res.code == 2 and "'--stagger': -5.0 is not in the range 0<=x<=3600" in res.err
    assert "hint: see 'git fleet-up -h'" in res.err


def test_a_zone_that_is_the_fleets_config_or_an_absolute_path_is_refused(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    res = sb.run(["git", "fleet-add", "cfg", "--zone", ".gitfleet.toml"], ok=False)
    assert res.code == 2 and "is .gitfleet.toml, the fleet's own configuration: no agent may own it" in res.err
    res = sb.run(["git", "fleet-add", "abs", "--zone", f"{sb.repo}/src/backend/**"], ok=False)
    assert res.code == 2 and "is an absolute path; zones are relative to the repository root" in res.err
    assert "write it as '/src/backend/**'" in res.err
    assert sb.branches() == ["main"] and not (sb.root / "repo-abs").exists()


def test_a_zone_that_owns_no_tracked_file_is_kept_with_a_warning(fleet_repo: Sandbox) -> None:
    """A typo gives an agent that owns nothing: say so; keep it, as the agent may be there to
    create those files."""
    sb = fleet_repo
    res = sb.run(["git", "fleet-add", "typo", "--zone", "src/bakcend/**", "--zone", "src/backend/api.py"])
    assert "zone pattern(s) of 'typo' own no tracked file in main: src/bakcend/**" in res.err
    assert "src/backend/api.py" not in res.err.split("own no tracked file")[1]
    res = sb.run(["git", "fleet-set", "typo", "--zone", "src/backend/**"])
    assert "own no tracked file" not in res.err


def test_who_for_a_directory_says_who_owns_what_is_inside(fleet_repo: Sandbox) -> None:
    """`git fleet-who src/frontend` answered "the orchestrator's" where web owns everything below."""
    sb = fleet_repo
    sb.add_agent("web", "src/frontend/**")
    sb.add_agent("backend", "src/backend/**", "!src/backend/**/*.md")
    res = sb.run(["git", "fleet-who", "src/frontend", "src", "src/frontend/app.js"])
    assert res.out.splitlines() == ["src/frontend/: web (1 file)",
                                    "src/: backend (1 file), web (1 file), the orchestrator (1 file)",
                                    "src/frontend/app.js: web (src/frontend/**)"]
    assert '"src": [\n    "backend",\n    "web"\n  ]' in sb.run(["git", "fleet-who", "--json", "src"]).out


def test_init_interactive_without_answers_leaves_nothing_set_up(fleet_repo: Sandbox) -> None:
    """Its standard input empty (no terminal): it said `interrupted` (exit 130) and left the
    config it had written; now it says why, and takes out what it set up."""
    sb = fleet_repo
    (sb.repo / ".gitfleet.toml").unlink()
    sb.git("fleet-init", "--uninstall")
    res = sb.run(["git", "fleet-init", "--interactive"], input="", ok=False)
    assert res.code == 2 and "ran out of answers on its standard input" in res.err and "nothing was set up" in res.err
    assert not (sb.repo / ".gitfleet.toml").exists() and not (sb.repo / ".git/hooks/pre-commit").exists()
    assert sb.git("config", "branch.main.mergeOptions", ok=None).out == ""


def test_init_says_what_to_commit(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.make_repo({"README.md": "x\n"})
    res = sb.run(["git", "fleet-init"])
    assert "wrote" in res.err and "commit it (git add .gitfleet.toml && git commit)" in res.err
    assert "tasks/, results/, master_plan.md" in res.err
    assert "commit it" not in sb.run(["git", "fleet-init"]).err  # (said once, when it writes the file)


def test_a_repository_of_another_user_gets_gits_own_advice(sandbox: Sandbox) -> None:
    """Not 'not a git repository', which hides how to trust it."""
    import os
    import shutil

    if os.geteuid() != 0:
        pytest.skip("making a repository another user's needs root")
    sb = sandbox
    sb.make_repo({"a": "1\n"})
    shutil.chown(sb.repo, "nobody")
    res = sb.run(["git", "fleet-list"], ok=False)
    assert res.code == 2 and "error: detected dubious ownership in repository at" in res.err
    assert f"hint: git config --global --add safe.directory {sb.repo}" in res.err


# -- where things go ---------------------------------------------------------------------------------

def test_two_repositories_side_by_side_keep_their_agents_worktrees_apart(fleet_repo: Sandbox) -> None:
    """`../agent-{agent}` was shared by every repository in the same directory: the default now
    names the repository, and `git fleet-add` says what it made (on a terminal; see below)."""
    sb = fleet_repo
    other = sb.root / "shop"
    sb.make_repo({"src/backend/x.py": "x\n"}, other)
    sb.run(["git", "fleet-init"], cwd=other)
    mine = sb.run(["git", "fleet-add", "backend", "--zone", "src/backend/**", "-v"])
    theirs = sb.run(["git", "fleet-add", "backend", "--zone", "src/backend/**", "-v"], cwd=other)
    assert f"worktree {sb.root / 'repo-backend'}" in mine.err and f"worktree {sb.root / 'shop-backend'}" in theirs.err
    assert f"added agent 'backend': new branch fleet/backend from main ({sb.head()[:7]})" in mine.err
    assert sb.git("rev-parse", "--show-toplevel", cwd=sb.root / "shop-backend").out.strip() == str(sb.root / "shop-backend")
    assert sb.git("rev-parse", "--git-common-dir", cwd=sb.root / "shop-backend").out.strip() == str(other / ".git")


def in_a_terminal(sb: Sandbox, args: list[str]) -> tuple[int, str]:
    """Run a real command with a terminal as its standard input, output and error (as a user at a
    keyboard runs it); its exit status and everything it wrote."""
    import os
    import pty

    master, slave = pty.openpty()
    proc = sb.spawn(args, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other end closed: the command is done
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=60), out.decode().replace("\r\n", "\n")


def test_add_says_what_it_made_on_a_terminal_and_nothing_to_a_script(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    assert sb.run(["git", "fleet-add", "web", "--zone", "src/frontend/**"]).err == ""
    code, out = in_a_terminal(sb, ["git", "fleet-add", "docs", "--zone", "docs/**", "--base", "main~0"])
    assert code == 0
    assert f"added agent 'docs': new branch fleet/docs from main~0 ({sb.head()[:7]}), worktree {sb.root / 'repo-docs'}" in out


def test_an_unknown_placeholder_in_the_worktree_path_is_an_error_with_file_and_line(fleet_repo: Sandbox) -> None:
    """`{repo}` was once taken literally, and a directory `{repo}-x` made; a misspelt one is refused."""
    sb = fleet_repo
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('worktree = "../{repo}-{agent}"', 'worktree = "../{repos}-{agent}"'))
    line = cfg.read_text().splitlines().index('worktree = "../{repos}-{agent}"') + 1
    res = sb.run(["git", "fleet-add", "web", "--zone", "src/frontend/**"], ok=False)
    assert res.code == 2
    assert res.err.splitlines()[0] == f"error: {cfg}:{line}: unknown placeholder {{repos}} in fleet.worktree"
    assert "placeholders: {repo} (the main worktree's directory name), {agent}" in res.err
    assert sb.branches() == ["main"] and sorted(p.name for p in sb.root.iterdir()) == ["repo"]
    # an older file (version 3) that writes {repo} is told which version it needs
    cfg.write_text(cfg.read_text().replace("{repos}", "{repo}").replace("version = 4", "version = 3"))
    res = sb.run(["git", "fleet-list"], ok=False)
    assert res.code == 2 and "{repo} in fleet.worktree needs `version = 4`" in res.err


def test_a_path_spelled_out_for_an_agent_is_kept(fleet_repo: Sandbox) -> None:
    """Configurations that spell an agent's path out (as git-fleet wrote them before {repo}) keep it."""
    sb = fleet_repo
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text() + '\n[agents.web]\nzone = ["src/frontend/**"]\nworktree = "../agent-web"\n')
    sb.run(["git", "fleet-zones", "--approve"])
    assert str(sb.root / "agent-web") in sb.run(["git", "fleet-list"]).out
    res = sb.run(["git", "fleet-run", "web", "--", "true"], ok=False)
    assert f"expected at {sb.root / 'agent-web'}" in res.err


def test_an_agents_worktree_is_known_by_this_clones_registration(fleet_repo: Sandbox) -> None:
    """Put with --path where no template says, and switched to another agent's branch: still that
    agent's worktree, for the commit hook as for fleet commands (one answer: the registration)."""
    sb = fleet_repo
    sb.add_agent("web", "src/frontend/**")
    sb.add_agent("api", "src/backend/**", extra=("--path", str(sb.root / "mine")))
    mine = sb.root / "mine"
    sb.git("switch", "-q", "--detach", cwd=sb.root / "repo-web")
    sb.git("switch", "-q", "fleet/web", cwd=mine)  # the api agent's worktree, on web's branch
    (mine / "src/frontend/app.js").write_text("app(3)\n")
    res = sb.git("commit", "-qam", "api edits web's files", cwd=mine, ok=False)
    assert "agent 'api'" in res.err and "src/frontend/app.js" in res.err
    assert "api" in sb.run(["git", "fleet-status"], cwd=mine).out
    assert sb.run(["git", "fleet-task", "claim", "--json"], cwd=mine, ok=None).err.find("agent 'web'") == -1
    sb.git("checkout", "-q", "--", ".", cwd=mine)
    sb.git("switch", "-q", "fleet/api", cwd=mine)
    sb.run(["git", "fleet-rm", "api"])
    assert sb.git("config", "--get-regexp", "fleet-agent").out.split() == [
        "fleet-agent.web.worktree", str(sb.root / "repo-web")]


def test_a_checkpoint_is_declared_with_a_command_of_its_own(fleet_repo: Sandbox) -> None:
    """Not TOML appended by hand: `git fleet-checkpoint add`, checked as fleet-add checks agents."""
    sb = fleet_repo
    sb.add_agent("web", "src/frontend/**")
    sb.add_agent("api", "src/backend/**")
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace("[fleet]", "# my note\n[fleet]"))
    sb.run(["git", "fleet-checkpoint", "add", "v1", "--agent", "api", "--agent", "web", "--test", "make test",
            "--timeout", "10m"])
    assert "# my note" in cfg.read_text()
    rows = {r["checkpoint"]: r for r in json.loads(sb.run(["git", "fleet-checkpoint", "--json"]).out)}
    assert rows["v1"]["test"] == "make test" and [a["agent"] for a in rows["v1"]["agents"]] == ["api", "web"]
    assert 'timeout = "10m"' in cfg.read_text()
    before = cfg.read_text()
    for args, words in ((["v1", "--agent", "api"], "checkpoint 'v1' exists already"),
                        (["v2", "--agent", "nobody"], "no agent named 'nobody'"),
                        (["v2", "--agent", "api", "--agent", "api"], "names an agent twice"),
                        (["v@2", "--agent", "api"], "'v@2' is not a valid checkpoint name"),
                        (["v2", "--agent", "api", "--timeout", "soon"], "'soon' is not a duration")):
        res = sb.run(["git", "fleet-checkpoint", "add", *args], ok=False)
        assert res.code == 2 and words in res.err, res.err
    res = sb.run(["git", "fleet-checkpoint", "add", "v2"], ok=False)
    assert res.code == 2 and "Missing option '--agent'" in res.err
    assert cfg.read_text() == before
    res = sb.run(["git", "fleet-checkpoint", "add", "v2", "--agent", "web"], cwd=sb.root / "repo-web", ok=False)
    assert res.code == 1 and "cannot declare checkpoints" in res.err


def test_one_agent_per_worktree_whatever_records_were_left(fleet_repo: Sandbox) -> None:
    """A worktree moved away by hand leaves its agent's record behind; a new agent put at that
    place takes the record over: commits there are the new agent's, and removing the old agent
    removes its own worktree, never the new one's."""
    sb = fleet_repo
    api = sb.add_agent("api", "src/backend/**")
    sb.git("worktree", "move", str(api), str(sb.root / "moved-api"))
    sb.run(["git", "fleet-add", "docs", "--zone", "docs/**", "--path", str(api)])
    assert sb.git("config", "--get-regexp", "fleet-agent").out.split() == ["fleet-agent.docs.worktree", str(api)]
    sb.commit(api, {"docs/guide.md": "# guide, by docs\n"}, "docs: guide")  # docs's own zone: taken
    (api / "src/backend/api.py").write_text("def api(): return 3\n")
    res = sb.git("commit", "-qam", "docs edits api's file", cwd=api, ok=False)
    assert "agent 'docs'" in res.err and "src/backend/api.py" in res.err
    sb.git("checkout", "-q", "--", ".", cwd=api)
    sb.run(["git", "fleet-rm", "api"])
    assert not (sb.root / "moved-api").exists() and (api / "docs/guide.md").is_file()


def test_a_worktree_no_record_names_is_known_where_the_config_puts_it(fleet_repo: Sandbox) -> None:
    """Made by hand (git worktree add, as the missing-worktree hint says, or in a clone whose
    records are gone): the hook knows it as fleet commands do, by its place, even detached."""
    sb = fleet_repo
    web = sb.add_agent("web", "src/frontend/**")
    sb.git("config", "--unset", "fleet-agent.web.worktree")
    sb.git("switch", "-q", "--detach", cwd=web)
    (web / "src/backend/api.py").write_text("def api(): return 3\n")
    res = sb.git("commit", "-qam", "web edits the backend, detached", cwd=web, ok=False)
    assert "agent 'web'" in res.err and "src/backend/api.py" in res.err
    assert "web" in sb.run(["git", "fleet-doctor"], ok=None).out


def test_a_record_given_on_the_command_line_is_not_believed(fleet_repo: Sandbox) -> None:
    """`git -c fleet-agent.web.worktree=HERE commit`: the records count only from the repository's
    own config, and the zone cache keeps nothing such a commit made it believe."""
    sb = fleet_repo
    api = sb.add_agent("api", "src/backend/**")
    sb.add_agent("web", "src/frontend/**")
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text() + "# a hand edit: the zone cache is cold\n")
    (api / "src/frontend/app.js").write_text("app(3)\n")
    res = sb.git("-c", f"fleet-agent.web.worktree={api}", "-c", "fleet-agent.api.worktree=/nowhere",
                 "commit", "-qam", "api as web", cwd=api, ok=False)
    assert "agent 'api'" in res.err and "src/frontend/app.js" in res.err
    res = sb.git("commit", "-qam", "api, plainly", cwd=api, ok=False)
    assert "agent 'api'" in res.err


def test_a_lone_brace_in_the_worktree_path_is_an_error(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('worktree = "../{repo}-{agent}"', 'worktree = "../{repo}-{agent}-{"'))
    res = sb.run(["git", "fleet-add", "web", "--zone", "src/frontend/**"], ok=False)
    assert res.code == 2 and "a lone brace in fleet.worktree" in res.err and "write a brace as {{ or }}" in res.err
    cfg.write_text(cfg.read_text().replace('-{"', '-{{x}}"'))
    sb.run(["git", "fleet-add", "web", "--zone", "src/frontend/**"])
    assert (sb.root / "repo-web-{x}").is_dir()
