"""Matching a path against a zone pattern that has no wildcards, without the `re` module.

Most zones are literal (`src/backend/**`, `docs/`, `/Makefile`); matching those with string
operations spares the commit hook the ~4 ms that importing `re` costs. zones.py decides which
patterns qualify; both the CLI and the hook match through here, so the tests against
`git check-ignore` cover this path too. Paths and literals are in the byte-per-character
form of zones.as_bytes_text.
"""

from __future__ import annotations

SPECIAL = frozenset("*?[\\")


def literal_match(kind: str, lit: str, path: str) -> bool:
    if kind == "prefix":  # "a/b/**", "a/b/": everything below a/b
        return path.startswith(lit)
    if kind == "path":  # "a/b": that path, or everything below it
        return path == lit or path.startswith(lit + "/")
    parts = path.split("/")
    if kind == "name":  # "Makefile": any component of that name, at any depth
        return lit in parts
    return lit in parts[:-1]  # "dirname", from "build/": a directory of that name, at any depth


def literal_form(core: str, must_be_dir: bool) -> tuple[str, str] | None:
    """(kind, literal) for a pattern (without its '!' and trailing '/') that needs no regex."""
    anchored = "/" in core
    lit = core.removeprefix("/")
    if anchored and lit.endswith("/**") and not must_be_dir and not SPECIAL.intersection(lit[:-3]):
        return "prefix", lit[:-2]
    if SPECIAL.intersection(lit):
        return None
    if anchored:
        return ("prefix", lit + "/") if must_be_dir else ("path", lit)
    return ("dirname", lit) if must_be_dir else ("name", lit)
