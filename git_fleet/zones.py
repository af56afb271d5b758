"""Zones: gitignore patterns compiled to regular expressions, owner lookup, overlaps.

A zone is an ordered list of gitignore patterns, relative to the repository root. A pattern
matches a path when `git check-ignore` would say a `.gitignore` holding only that pattern
ignores it: the path itself matches, or one of its leading directories does. Across the
patterns of one zone the last one that matches decides, so a later `!pattern` takes paths
back out even below a directory an earlier pattern matched (git's `.gitignore` cannot
re-include below an excluded directory; zones can).

The translation follows git's dir.c (parse_path_pattern, match_basename, match_pathname)
and wildmatch.c, and is checked against git itself in tests/test_zone_patterns.py. Only
`re` is needed at match time, so the commit hook can use the compiled form without
importing anything heavy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import FleetError
from .match import literal_form, literal_match

# wildmatch's character classes ([:alpha:] and friends), as Python class contents.
_POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9",
    "alpha": "a-zA-Z",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z",
    "xdigit": "0-9a-fA-F",
}


def as_bytes_text(path: str) -> str:
    """A path as git's wildmatch sees it: one character per byte of its UTF-8 form.

    Matching is done on this form so that '?' and '[...]' take one byte, as in git.
    """
    return path.encode("utf-8", "surrogateescape").decode("latin-1")


# git folds case only for ASCII letters (core.ignoreCase; its own ctype tables): so does a fleet
# whose zones ignore case ([fleet] ignore_case)
FOLD = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def fold(key: str) -> str:
    return key.translate(FOLD)


class PatternError(FleetError):
    """A zone pattern that git would not read as the user meant."""


@dataclass(frozen=True)
class Pattern:
    text: str  # as written
    regex: str  # matches a path (or a path below a matched directory) from its start
    include: bool  # False for a `!` pattern
    literal: tuple[str, str] | None = None  # (kind, text) when no regex is needed; see match.py
    ignore_case: bool = False  # then the literal is folded, and the regex says (?ai)

    def matches(self, key: str) -> bool:
        """Whether the pattern matches `key` (a path in as_bytes_text form)."""
        if self.literal is not None:
            return literal_match(*self.literal, fold(key) if self.ignore_case else key)
        return re.match(self.regex, key) is not None


def _strip_trailing_spaces(p: str) -> str:
    # dir.c trim_trailing_spaces: unescaped trailing spaces go, "\ " keeps its space.
    end = len(p)
    while end and p[end - 1] == " ":
        backslashes = 0
        i = end - 2
        while i >= 0 and p[i] == "\\":
            backslashes += 1
            i -= 1
        if backslashes % 2:
            break
        end -= 1
    return p[:end]


def _bracket(p: str, i: int, ignore_case: bool = False) -> tuple[str, int] | None:
    """Translate the bracket expression starting at p[i] == '['; None if it never closes.
    ignore_case: as wildmatch with WM_CASEFOLD, which folds the path's letters, not the bracket's
    own: an upper-case letter given alone never matches (ranges and classes do fold)."""

    def member(c: str) -> str:
        return "" if ignore_case and "A" <= c <= "Z" else re.escape(c)

    j = i + 1
    negate = j < len(p) and p[j] in "!^"
    if negate:
        j += 1
    items: list[str] = []
    first = True
    while j < len(p):
        c = p[j]
        if c == "]" and not first:
            body = "".join(items)
            # WM_PATHNAME: a bracket never matches '/'.
            if negate:
                return f"[^/{body}]", j + 1
            return (f"(?!/)[{body}]" if body else "(?!)"), j + 1
        first = False
        if c == "\\" and j + 1 < len(p):
            c = p[j + 1]
            j += 1
        elif c == "[" and p.startswith("[:", j):
            # as wildmatch reads it: up to the next ']'; a class only if ':' comes right before it
            # and something before that ("[[:]ab]" and "[[:digit]ab]" hold a plain '[')
            close = p.find("]", j + 2)
            if close == -1:
                return None
            if close > j + 2 and p[close - 1] == ":":
                name = p[j + 2 : close - 1]
                if name not in _POSIX_CLASSES:
                    return None  # wildmatch aborts on an unknown class
                items.append(_POSIX_CLASSES[name])
                j = close + 1
                continue
        # a range a-z (the '-' is literal at the end of the class)
        if j + 2 < len(p) and p[j + 1] == "-" and p[j + 2] != "]":
            hi = p[j + 2]
            step = 3
            if hi == "\\" and j + 3 < len(p):
                hi = p[j + 3]
                step = 4
            # wildmatch takes the range's first character as a member before it sees the '-', so
            # a reversed range ("[a-Z]") still holds that one
            items.append(f"{re.escape(c)}-{re.escape(hi)}" if ord(hi) >= ord(c) else member(c))
            j += step
            continue
        items.append(member(c))
        j += 1
    return None


def _wild(p: str, pathname: bool, ignore_case: bool = False) -> str:
    """wildmatch(p) as a regex body that must match a whole string.

    `pathname` is False for a pattern without a slash, which git matches against the
    basename: there '*' and '**' are alike, and none of them can meet a '/'.

    With a slash, git compares the literal part before the first wildcard itself and gives
    wildmatch only the rest, where a '**' that came right after that part stands at the start:
    so "a**/b" is "a" then "**/b" (any directories), matching "ab" and "ax/y/b", although the
    '**' follows a letter.
    """
    out: list[str] = []
    i = 0
    n = len(p)
    star = "[^/]*"
    literal = next((k for k, ch in enumerate(p) if ch in "*?[\\"), n)  # git's nowildcardlen
    while i < n:
        c = p[i]
        if c == "*":
            j = i
            while j < n and p[j] == "*":
                j += 1
            double = j - i >= 2
            at_start = i == 0 or p[i - 1] == "/" or i == literal
            slash = 1 if p.startswith("/", j) else 2 if p.startswith("\\/", j) else 0  # (wildmatch reads an escaped slash as one)
            at_end = j == n or slash > 0
            if pathname and double and at_start and at_end:
                # "**/": zero or more directories; "**" and an escaped slash: one or more (no shortcut for none)
                if j < n:
                    out.append("(?:.*/)?" if slash == 1 else ".*/")
                    j += slash
                else:  # trailing "**": everything
                    out.append(".*")
            else:
                out.append(star)
            i = j
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            got = _bracket(p, i, ignore_case)
            if got is None:
                raise PatternError("it has an unclosed or unknown character class")
            out.append(got[0])
            i = got[1]
        elif c == "\\":
            if i + 1 >= n:
                raise PatternError("it ends with a lone backslash")
            out.append(re.escape(p[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def compile_pattern(text: str, ignore_case: bool = False) -> Pattern:
    """Compile one gitignore pattern; raise PatternError for one git would not match.
    ignore_case: match as git does with core.ignoreCase (ASCII letters only)."""
    hint = "zone patterns are gitignore patterns, e.g. 'src/backend/**' or '*.md'"
    p = _strip_trailing_spaces(text)
    if not p.strip():
        raise PatternError(f"empty zone pattern '{text}'", hint)
    if p.startswith("#"):
        raise PatternError(f"zone pattern '{text}' is a comment in gitignore syntax", "write '\\#' for a literal '#'")
    p = as_bytes_text(p)
    include = True
    if p.startswith("!"):
        include = False
        p = p[1:]
    must_be_dir = p.endswith("/")
    if must_be_dir:
        p = p[:-1]
    if not p or p == "/":
        raise PatternError(f"zone pattern '{text}' matches nothing", hint)
    segments = p.lstrip("/").split("/")
    if ".." in segments or "." in segments or "" in segments:
        raise PatternError(f"zone pattern '{text}' is not a path inside the repository", hint)
    try:
        if "/" not in p:  # NODIR: matches a basename at any depth
            body = "(?:.*/)?" + _wild(p, pathname=False, ignore_case=ignore_case)
        else:
            body = _wild(p.removeprefix("/"), pathname=True, ignore_case=ignore_case)
    except PatternError as e:
        raise PatternError(f"bad zone pattern '{text}': {e.message}", hint) from None
    regex = ("(?ai)" if ignore_case else "") + "^(?:" + body + (")/" if must_be_dir else ")(?:/|$)")
    re.compile(regex)
    literal = literal_form(p, must_be_dir)
    if literal is not None and ignore_case:
        literal = (literal[0], fold(literal[1]))
    return Pattern(text=text, regex=regex, include=include, literal=literal, ignore_case=ignore_case)


class Zone:
    """The compiled patterns of one agent."""

    def __init__(self, patterns: Sequence[str] | Sequence[Pattern], ignore_case: bool = False):
        self.patterns: list[Pattern] = [p if isinstance(p, Pattern) else compile_pattern(p, ignore_case)
                                        for p in patterns]

    def deciding(self, path: str) -> Pattern | None:
        """The last pattern that matches `path`, whether it includes or excludes it."""
        key = as_bytes_text(path)
        for pat in reversed(self.patterns):
            if pat.matches(key):
                return pat
        return None

    def owns(self, path: str) -> bool:
        pat = self.deciding(path)
        return pat is not None and pat.include


def _example_paths(text: str) -> list[str]:
    """A few concrete paths that a pattern matches, for finding overlaps between zones."""
    p = _strip_trailing_spaces(text).lstrip("!")
    trailing_dir = p.endswith("/")
    p = p.strip("/")
    out = []
    for star, dstar in (("x", ""), ("x", "d/")):
        s = re.sub(r"\*\*/", dstar, p)
        s = re.sub(r"/\*\*$", "/x", s)
        s = s.replace("**", star).replace("*", star).replace("?", "x")
        s = re.sub(r"\[!?\^?\]?[^\]]*\]", "x", s).replace("\\", "")
        if trailing_dir or not s:
            s = (s + "/x").lstrip("/")
        out.append(s)
    return out


def find_overlap(a: Zone, b: Zone, known_paths: Iterable[str] = ()) -> str | None:
    """A path owned by both zones, or None if none is found.

    Exact overlap of two regular languages is more than a user needs; this tries the tracked
    files and paths made from each pattern and from each pattern's directory joined with
    the other's file names, which finds every overlap that ordinary zones have.
    """
    samples_a = [s for p in a.patterns if p.include for s in _example_paths(p.text)]
    samples_b = [s for p in b.patterns if p.include for s in _example_paths(p.text)]
    candidates: list[str] = []
    candidates += samples_a + samples_b
    for x in samples_a:
        for y in samples_b:
            for d, f in ((x, y), (y, x)):
                head = d.rsplit("/", 1)[0] if "/" in d else ""
                tail = f.rsplit("/", 1)[-1]
                if head:
                    candidates.append(f"{head}/{tail}")
                    candidates.append(f"{head}/{f}")
    synthetic = next((p for p in candidates if a.owns(p) and b.owns(p)), None)
    # a real file makes the better example; look for one even when a made-up path was found
    real = next((p for p in known_paths if a.owns(p) and b.owns(p)), None)
    return real or synthetic
