#!/usr/bin/env python3
"""Writes a `git fast-import` stream of a synthetic history for timing `cfa-release plan`.

COMMITS commits on main over COMPONENTS components (comp0..compN, each `compK/src/*.rs`); every
MERGE_EVERY-th main commit is a merge of a two-commit side branch. Messages cycle through fix,
feat, non-conventional, a squash body, and (rarely) a breaking change. Deterministic.
Usage: bench/release_history.py COMMITS COMPONENTS MERGE_EVERY | git fast-import --quiet
"""
import sys

commits, components, merge_every = (int(a) for a in sys.argv[1:4])
out = sys.stdout.buffer
mark = 0
clock = 1_767_225_600


def data(text: bytes) -> bytes:
    return b"data %d\n%s\n" % (len(text), text)


def message(i: int, comp: int) -> bytes:
    kinds = [
        b"fix(comp%d): issue %d" % (comp, i),
        b"feat(comp%d): feature %d" % (comp, i),
        b"Tidy up %d" % i,
        b"Squashed work (#%d)\n\n* feat(comp%d): part one\n* fix: part two" % (i, comp),
    ]
    if i % 997 == 0:
        return b"refactor!: breaking %d" % i
    return kinds[i % len(kinds)]


def commit(ref: bytes, parent, other, i: int, comp: int) -> int:
    global mark, clock
    mark += 1
    clock += 60
    out.write(b"commit %s\nmark :%d\n" % (ref, mark))
    out.write(b"committer Bench <bench@example.org> %d +0000\n" % clock)
    out.write(data(message(i, comp)))
    if parent:
        out.write(b"from :%d\n" % parent)
    if other:
        out.write(b"merge :%d\n" % other)
    out.write(b"M 100644 inline comp%d/src/file%d.rs\n" % (comp, i % 50))
    out.write(data(b"// change %d\n" % i))
    return mark


main = None
for i in range(commits):
    comp = i % components
    if merge_every and i > 0 and i % merge_every == 0:
        side = commit(b"refs/heads/side", main, None, i * 7 + 1, (comp + 1) % components)
        side = commit(b"refs/heads/side", side, None, i * 7 + 2, (comp + 2) % components)
        main = commit(b"refs/heads/main", main, side, i, comp)
    else:
        main = commit(b"refs/heads/main", main, None, i, comp)
out.write(b"reset refs/heads/side\nfrom 0000000000000000000000000000000000000000\n\n")
