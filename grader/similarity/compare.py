"""Pairs of submissions scored for similarity, with the shared fragments as evidence.

Pipeline: each submission's module source -> canonical tokens (tokens.py) -> winnowed fingerprints
(fingerprints.py), cached by content hash -> fingerprints of the starter code removed -> an inverted
index fingerprint -> submissions -> shared weight per pair, and per top-level unit (function/class)
for partial copies. No pair is diffed unless it is reported with evidence.

Weights: a fingerprint that `df` submissions share weighs 1 when df <= 2 and (2/df)^2 above (a
fragment many students write is an idiom or the template, not a copy: 0.44 for 3 students, 0.08 for
7); fingerprints shared by more than DF_CAP submissions (weight < 0.007) are left out of the pair
sums so that the index stays near-linear in the class size.

Scores, all in [0, 1]:
- whole   = shared weight / max(smaller submission's weight, MIN_MASS): a copy padded with dead code
            or extra functions still scores high (containment of the smaller in the larger);
- partial = the largest share of one unit (function or class, >= MIN_UNIT weight) found in the
            other submission, times PARTIAL_FACTOR, and scaled down when the shared weight is under
            UNIT_FULL (one method that the template all but dictates, written alike by two students,
            is no evidence): one class copied into otherwise own work ranks near the top, under
            whole copies;
- score   = max(whole, partial).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from grader.similarity.fingerprints import K, W, Fingerprint, kgram_hashes, winnow_segments
from grader.similarity.tokens import VERSION, tokenize_segments, tokenize_tree, top_level_units

DF_CAP = 24
MIN_MASS = 25.0
MIN_UNIT = 4.0
UNIT_FULL = 12.0
PARTIAL_FACTOR = 0.85
#: a module past this is listed, not compared: 2 MB of "x=1" lines (1.9 M nodes) took 71 s and 1.2 GB
MAX_NODES = 60_000


@dataclass
class Document:
    """One submission's code, fingerprinted. `units` are (name, first line, last line)."""
    student: str
    origin: str  # the file the code came from (a module, or "x.ipynb (code cells)")
    source: str
    fingerprints: list[Fingerprint]
    units: list[tuple[str, int, int]]
    kept: dict[int, Fingerprint] = field(default_factory=dict)  # hash -> first fingerprint, starter removed
    unit_of: dict[int, int] = field(default_factory=dict)  # hash -> index into units (-1: module level)
    mass: float = 0.0


@dataclass
class Skipped:
    student: str
    reason: str


@dataclass
class Fragment:
    """A run of shared fingerprints, consecutive in both submissions: the lines each covers."""
    a_lines: tuple[int, int]  # first and last line in a
    b_lines: tuple[int, int]
    weight: float
    a_spans: list[tuple[int, int]] = field(default_factory=list)  # the lines actually matched
    b_spans: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Pair:
    a: str
    b: str
    score: float
    whole: float
    partial: float
    partial_unit: str = ""  # "alice:MoGPrior" when the partial score decided
    fragments: list[Fragment] = field(default_factory=list)


@dataclass
class Comparison:
    documents: list[Document]
    skipped: list[Skipped]
    pairs: list[Pair]  # every pair of documents, highest score first
    starter: str  # where the starter code came from ("" when none was removed)


# ---------------------------------------------------------------------------------------------
# Fingerprinting, cached by content
# ---------------------------------------------------------------------------------------------

def _cache_dir() -> Path:
    from grader.model_cache import cache_dir  # one place says where gradekit's cache is ($GRADEKIT_CACHE)

    return cache_dir() / "similarity" / f"v{VERSION}-k{K}-w{W}"


def fingerprint_source(source: str, use_cache: bool = True) -> tuple[list[Fingerprint], list[tuple[str, int, int]]]:
    """(fingerprints, units) of a module's source; raises SyntaxError/ValueError when it does not parse.
    Cached under $GRADEKIT_CACHE/similarity by the sha256 of the source."""
    key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
    path = _cache_dir() / f"{key}.json"
    if use_cache:
        try:
            data = json.loads(path.read_text())
            return ([Fingerprint(*f) for f in data["fingerprints"]], [tuple(u) for u in data["units"]])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    tree = ast.parse(source)
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:  # normalising costs ~35 us and ~600 bytes a node: bounded before it starts
        raise ValueError(f"{nodes} syntax-tree nodes (a homework module has ~1 500; at most {MAX_NODES} are compared)")
    units = top_level_units(tree)  # before the tokens: normalising rewrites the tree in place
    fps = winnow_segments(tokenize_tree(tree))
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"fingerprints": [[f.hash, f.pos, f.first_line, f.last_line] for f in fps],
                                       "units": [list(u) for u in units]}))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache costs time, never a result
    return fps, units


_TODO_RAISE = re.compile(r"^\s*raise\s+NotImplementedError\b.*$", re.MULTILINE)


def starter_hashes(source: str) -> set[int]:
    """Every k-gram hash of the starter code (not only the winnowed ones: a student's window may
    select any k-gram of the template). The template's `raise NotImplementedError(...)` lines are
    left out first: students delete them and keep the lines after them, which would otherwise be
    dropped as dead code."""
    source = _TODO_RAISE.sub(lambda m: m.group(0).split("raise")[0] + "pass", source)
    return {h for seg in tokenize_segments(source)
            for h in (kgram_hashes(seg) if len(seg) >= K else kgram_hashes(seg, len(seg)))}


def make_document(student: str, origin: str, source: str, use_cache: bool = True) -> Document:
    fps, units = fingerprint_source(source, use_cache)
    return Document(student, origin, source, fps, units)


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

def _weight(df: int) -> float:
    return 1.0 if df <= 2 else (2.0 / df) ** 2


def _unit_index(units: list[tuple[str, int, int]], line: int) -> int:
    for i, (_, first, last) in enumerate(units):
        if first <= line <= last:
            return i
    return -1


def compare_documents(docs: list[Document], starter: set[int] | None = None, evidence_for: int = 50,
                      skipped: list[Skipped] | None = None, starter_origin: str = "") -> Comparison:
    """Score every pair of `docs`; the `evidence_for` best pairs get their fragments."""
    starter = starter or set()
    for d in docs:
        d.kept, d.unit_of = {}, {}
        for f in d.fingerprints:
            if f.hash not in starter and f.hash not in d.kept:
                d.kept[f.hash] = f
                d.unit_of[f.hash] = _unit_index(d.units, f.first_line)
    postings: dict[int, list[int]] = defaultdict(list)
    for i, d in enumerate(docs):
        for h in d.kept:
            postings[h].append(i)
    weight = {h: _weight(len(p)) for h, p in postings.items()}
    unit_mass: list[dict[int, float]] = []
    for d in docs:
        d.mass = sum(weight[h] for h in d.kept)
        um: dict[int, float] = defaultdict(float)
        for h, u in d.unit_of.items():
            if u >= 0:
                um[u] += weight[h]
        unit_mass.append(um)

    shared: dict[tuple[int, int], float] = defaultdict(float)
    unit_shared: dict[tuple[int, int, int], float] = defaultdict(float)  # (doc, unit, other doc)
    for h, p in postings.items():
        if len(p) < 2 or len(p) > DF_CAP:
            continue
        w = weight[h]
        for x in range(len(p)):
            i = p[x]
            ui = docs[i].unit_of[h]
            for y in range(x + 1, len(p)):
                j = p[y]
                shared[(i, j)] += w
                if ui >= 0:
                    unit_shared[(i, ui, j)] += w
                uj = docs[j].unit_of[h]
                if uj >= 0:
                    unit_shared[(j, uj, i)] += w

    best_unit: dict[tuple[int, int], tuple[float, str]] = {}
    for (i, u, j), s in unit_shared.items():
        m = unit_mass[i][u]
        if m < MIN_UNIT:
            continue
        key = (min(i, j), max(i, j))
        share = min(1.0, s / m) * min(1.0, s / UNIT_FULL)  # a few shared lines cannot decide a pair alone
        if share > best_unit.get(key, (0.0, ""))[0]:
            best_unit[key] = (share, f"{docs[i].student}:{docs[i].units[u][0]}")

    pairs = []
    for i in range(len(docs)):
        for j in range(i + 1, len(docs)):
            s = shared.get((i, j), 0.0)
            whole = min(1.0, s / max(min(docs[i].mass, docs[j].mass), MIN_MASS))
            share, unit = best_unit.get((i, j), (0.0, ""))
            partial = PARTIAL_FACTOR * share
            a, b = sorted((docs[i].student, docs[j].student))
            pairs.append(Pair(a, b, max(whole, partial), whole, partial, unit if partial > whole else ""))
    pairs.sort(key=lambda p: (-p.score, p.a, p.b))
    by_name = {d.student: d for d in docs}
    for p in pairs[:evidence_for]:
        if p.score > 0:
            p.fragments = fragments(by_name[p.a], by_name[p.b], weight)
    return Comparison(docs, list(skipped or []), pairs, starter_origin)


def fragments(a: Document, b: Document, weight: dict[int, float] | None = None) -> list[Fragment]:
    """Shared fingerprints of a and b grouped into runs that are consecutive in both (as MOSS shows
    them), heaviest first."""
    common = [(a.kept[h], b.kept[h], (weight or {}).get(h, 1.0)) for h in a.kept.keys() & b.kept.keys()]
    common.sort(key=lambda t: t[0].pos)
    runs: list[list] = []
    gap = K + W
    for fa, fb, w in common:
        if runs:
            la, lb, _ = runs[-1][-1]
            if 0 < fa.pos - la.pos <= gap and 0 < fb.pos - lb.pos <= gap \
                    and fa.first_line - la.last_line <= 2 and fb.first_line - lb.last_line <= 2:
                runs[-1].append((fa, fb, w))
                continue
        runs.append([(fa, fb, w)])
    out = [Fragment((min(f.first_line for f, _, _ in r), max(f.last_line for f, _, _ in r)),
                    (min(g.first_line for _, g, _ in r), max(g.last_line for _, g, _ in r)),
                    sum(w for _, _, w in r),
                    [(f.first_line, f.last_line) for f, _, _ in r], [(g.first_line, g.last_line) for _, g, _ in r])
           for r in runs]
    return sorted(out, key=lambda f: -f.weight)
