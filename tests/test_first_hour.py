"""The first hour (issue 13), as a new user meets it: each rough edge driven through the installed
commands, as the user types them."""

from __future__ import annotations

import pytest
from helpers import Sandbox


@pytest.mark.parametrize("group, names", [("task", "add, claim, done, fail, list, path, release, renew, show"),
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
    assert res.code == 2 and "'--stagger': -5.0 is not in the range x>=0" in res.err
    assert "hint: see 'git fleet-up -h'" in res.err
