"""Zone patterns match exactly what `git check-ignore` matches; the last matching pattern decides."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from git_fleet.check import CompiledAgent, rules_of
from git_fleet.zones import PatternError, Zone, compile_pattern, find_overlap

NAMES = ["a", "b", "ab", "ba", "a.md", "b.txt", "x", "src", "docs", "a b", "é", ".h", "A", "1", "aab",
         "abb", "-", "]", "a*", "[a]", "c!", "日本", "SRC", "É", "[ab]", "b:", "B.MD"]
ATOMS = ["a", "b", "*", "**", "?", "/", ".md", "src", "x", "[ab]", "[!a]", "[a-c]", "[[:alpha:]]",
         "[[:digit:]]", "[[:upper:]]", "\\*", "\\[", " ", "\\ ", "é", "A", "[]]", "[^b]", "-", "!", "??",
         "***", "[é]", "日", "[[:]ab]", "[[:digit]ab]", "[A-Z]", "SRC", "[[:lower:]]", "É", "[A]", "[!B]",
         "[Ab]", "[Z-A]"]


def _tree(rnd: random.Random) -> list[str]:
    paths = sorted({"/".join(rnd.choice(NAMES) for _ in range(rnd.randint(1, 4))) for _ in range(500)})
    return [p for p in paths if not any(q.startswith(p + "/") for q in paths)]


def _pattern(rnd: random.Random) -> str:
    p = "".join(rnd.choice(ATOMS) for _ in range(rnd.randint(1, 5)))
    if rnd.random() < 0.2:
        p = "/" + p
    if rnd.random() < 0.2:
        p += "/"
    return p.lstrip("!#") or "a"


@pytest.fixture(scope="module")
def worktree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    d = tmp_path_factory.mktemp("patterns")
    subprocess.run(["git", "init", "-q", str(d)], check=True)
    files = _tree(random.Random(7))
    for f in files:
        (d / f).parent.mkdir(parents=True, exist_ok=True)
        (d / f).touch()
    return d, files


def git_matches(d: Path, files: list[str], pattern: str, ignore_case: bool = False) -> set[str]:
    (d / ".gitignore").write_text(pattern + "\n", encoding="utf-8")
    out = subprocess.run(["git", "-c", f"core.ignoreCase={str(ignore_case).lower()}", "check-ignore", "--no-index",
                          "--stdin", "-z"], cwd=d, capture_output=True, input="\0".join(files).encode()).stdout.decode()
    return {p for p in out.split("\0") if p}


def our_matches(pattern: str, files: list[str], ignore_case: bool = False) -> set[str] | None:
    """What a zone of this one pattern owns, asked both ways: through Zone (the CLI) and
    through the compiled form the commit hook reads; the two must agree."""
    try:
        zone = Zone([pattern], ignore_case)
    except PatternError:
        return None
    owned = {f for f in files if zone.owns(f)}
    agent = compiled_agent([pattern], ignore_case)
    assert {f for f in files if agent.owns(f)} == owned, pattern
    return owned


def compiled_agent(patterns: list[str], ignore_case: bool = False) -> CompiledAgent:
    return CompiledAgent("a", "fleet/a", "/w", patterns, rules_of(Zone(patterns, ignore_case)), ignore_case)


HAND_PICKED = ["src/backend/**", "a/**", "/a/**", "a b/**", "a/b", "/a", "a/", "/a/", "a b", "Makefile", ".h",
               "é/**", "a/b/**", "ab/**/", "foo", "src/", "/src", "src/**", "**/x", "a/**/b", "*.md", "docs/*", "a?",
               "[ab]x", "[!a]",
               "**", "**/", "a/**", "x\\ ", "x  ", "[]a]", "[!a-c]z", "a**b", "***", "*/*", "**/a/**",
               "a/**/", "é", "?", "??", "[[:alpha:]]", "[[:digit:]]*", "日本/", "[é]", "a b", "-", "\\!x",
               "\\#x", "a/b/", "/a/b", "*/a.md", "src/**/*.md", "[a-]", "[-a]", "[a-c-e]", "[[:]ab]",
               "[[:digit]ab]", "a[[:]b", "[A-Z]", "[[:upper:]]", "SRC/**", "Src/", "[a-Z]", "[Z-a]",
               "[A]bc", "[!A]", "[aB]*", "[Z-A]", "[\\A]"]


@pytest.mark.parametrize("ignore_case", [False, True], ids=["case", "ignore-case"])
@pytest.mark.parametrize("seed", range(4))
def test_each_pattern_matches_what_git_check_ignore_matches(worktree: tuple[Path, list[str]], seed: int,
                                                             ignore_case: bool) -> None:
    """ignore-case: the fleet's ignore_case against git's core.ignoreCase ([A-Z] owns 'a')."""
    d, files = worktree
    rnd = random.Random(seed)
    patterns = HAND_PICKED if seed == 0 else [_pattern(rnd) for _ in range(300)]
    checked = 0
    for pattern in patterns:
        theirs = git_matches(d, files, pattern, ignore_case)
        ours = our_matches(pattern, files, ignore_case)
        if ours is None:  # refused as bad: only where git matches nothing either
            assert not theirs, f"refused {pattern!r} but git matches {sorted(theirs)[:5]}"
            continue
        checked += 1
        assert ours == theirs, (f"pattern {pattern!r}: only ours {sorted(ours - theirs)[:5]}, "
                                f"only git {sorted(theirs - ours)[:5]}")
    assert checked > len(patterns) * 0.8


def test_literal_patterns_need_no_regex() -> None:
    forms = {p: compile_pattern(p).literal for p in ["src/backend/**", "/docs/", "Makefile", "build/", "a/b", "*.md", "a/**/b"]}
    assert forms == {"src/backend/**": ("prefix", "src/backend/"), "/docs/": ("prefix", "docs/"),
                     "Makefile": ("name", "Makefile"), "build/": ("dirname", "build"), "a/b": ("path", "a/b"),
                     "*.md": None, "a/**/b": None}


@pytest.mark.parametrize("seed", range(3))
def test_last_matching_pattern_decides(worktree: tuple[Path, list[str]], seed: int) -> None:
    """A zone of several patterns: each path goes by the last pattern git says matches it."""
    d, files = worktree
    rnd = random.Random(100 + seed)
    for _ in range(25):
        patterns = [("!" if rnd.random() < 0.4 and i else "") + _pattern(rnd) for i in range(rnd.randint(2, 4))]
        try:
            zone = Zone(patterns)
        except PatternError:
            continue
        expected = {}
        for p in patterns:
            negative = p.startswith("!")
            for f in git_matches(d, files, p[1:] if negative else p):
                expected[f] = not negative
        owned = {f for f in files if zone.owns(f)}
        assert owned == {f for f, inc in expected.items() if inc}, patterns
        agent = compiled_agent(patterns)
        assert {f for f in files if agent.owns(f)} == owned, patterns


def test_negation_reaches_below_a_matched_directory() -> None:
    zone = Zone(["src/", "!src/**/*.md"])
    assert zone.owns("src/a/x.py")
    assert not zone.owns("src/a/README.md")
    assert zone.deciding("src/a/README.md").text == "!src/**/*.md"  # type: ignore[union-attr]
    assert not zone.owns("lib/x.py")


def test_a_later_pattern_can_take_paths_back() -> None:
    zone = Zone(["*.md", "!docs/**", "docs/api/*.md"])
    assert zone.owns("README.md")
    assert not zone.owns("docs/guide.md")
    assert zone.owns("docs/api/x.md")


@pytest.mark.parametrize("bad", ["", "   ", "# comment", "!", "/", "a[b", "x\\", "../outside", "a/../b",
                                 "[[:nope:]]x", "./a"])
def test_bad_patterns_are_refused_with_the_pattern_named(bad: str) -> None:
    with pytest.raises(PatternError) as e:
        compile_pattern(bad)
    assert f"'{bad}'" in e.value.message
    assert e.value.hint


@pytest.mark.parametrize("a, b, overlaps", [
    (["src/**"], ["src/backend/**"], True),
    (["*.md"], ["docs/**"], True),
    (["src/backend/"], ["src/frontend/"], False),
    (["src/", "!src/ui/**"], ["src/ui/"], False),
    (["/Makefile"], ["Makefile"], True),
    (["docs/*"], ["docs/api/"], True),
    (["docs/*.md"], ["docs/api/"], False),
    (["tests/**/test_*.py"], ["tests/unit/"], True),
])
def test_overlaps_are_found_with_an_example_both_own(a: list[str], b: list[str], overlaps: bool) -> None:
    za, zb = Zone(a), Zone(b)
    example = find_overlap(za, zb)
    if overlaps:
        assert example is not None and za.owns(example) and zb.owns(example)
    else:
        assert example is None


def test_overlap_found_through_tracked_files() -> None:
    za, zb = Zone(["**/generated/**"]), Zone(["lib/[a-c]*/"])
    assert find_overlap(za, zb, ["lib/core/generated/x.c", "lib/zz/y"]) == "lib/core/generated/x.c"
