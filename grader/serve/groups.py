"""Answers to one question grouped when they are near-identical, so one decision can be given to a whole group.

A group is a promise to the TA that one grade fits all its members, so it joins only answers that say the
same thing in the same words: one wrong sign, number, symbol or word ("smallest" for "mean of the discarded")
changes the grade the key gives. Two answers are near-identical when their canonical token sequences are
equal token for token, where the canonical form ignores what never changes a grade:
- whitespace, case of prose, punctuation that ends or separates sentences, Markdown emphasis and code marks;
- spelling variants of the same TeX (`\\left`/`\\right`, spacing commands, `\\tfrac` for `\\frac`, `−` for `-`,
  `\\cdot`/`\\times`/`·`/`×` for `*`, braces);
- a few filler words ("the", "we", "basically", ...; never "not", "no", "only", "all", ...);
- one typo per long word (one letter added, dropped or changed in a word of 6+ letters outside maths:
  "parametrization"/"parameterization", "optimise"/"optimize").
Everything else (numbers, operators, symbols, variable names, word order, any other word) must match.
Linkage is complete: an answer joins a group only when it is near-identical to every member, so typos cannot
chain. Exact duplicates (same text once whitespace and case are ignored) are flagged. Empty answers form one
group. Deterministic, standard library only. Measured on a labelled set (`tests/answer_group_cases.py`,
`bench/bench_serve.py`): no group mixes answers that the key grades differently.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache


@dataclass
class AnswerGroup:
    id: int  # 1-based, groups sorted by size (largest first), then by first member
    members: list[str]  # students, sorted
    duplicate_sets: list[list[str]] = field(default_factory=list)  # students whose answers are identical
    empty: bool = False  # the students gave no answer

    @property
    def size(self) -> int:
        return len(self.members)


FILLER_WORDS = frozenset("""a an the we i you one so then thus hence basically simply just really also here
    that which this these those it its is are be was were as in short note class seen""".split())
TYPO_MIN_LETTERS = 6
_MATH = re.compile(r"\$\$.+?\$\$|\$[^$\n]+?\$|\\\(.+?\\\)|\\\[.+?\\\]", re.S)
_TOKEN = re.compile(r"\\[A-Za-z]+|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|[^\W\d_]+|\S")
_TEX_NOISE = {r"\left", r"\right", r"\big", r"\Big", r"\bigg", r"\Bigg", r"\bigl", r"\bigr", r"\,", r"\;", r"\!",
              r"\quad", r"\qquad", r"\displaystyle", r"\mathrm", r"\text", r"\operatorname", "{", "}", "$"}
_SAME = {r"\tfrac": r"\frac", r"\dfrac": r"\frac", r"\cdot": "*", r"\times": "*", "·": "*", "×": "*",
         "−": "-", "–": "-", r"\le": r"\leq", r"\ge": r"\geq", r"\varepsilon": r"\epsilon", "≤": r"\leq",
         "≥": r"\geq", r"\lbrace": "{", r"\rbrace": "}"}
_PROSE_PUNCT = set(".,;:!?\"'`“”‘’") | {"*"}  # "*" in prose is Markdown emphasis; in maths it is kept


def normalise(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip().casefold()


def canonical(text: str | None) -> tuple[tuple[str, bool], ...]:
    """The answer as (token, is_prose_word) pairs, with what never changes a grade taken out (module docstring)."""
    text = (text or "").replace("**", " ").replace("__", " ")
    out: list[tuple[str, bool]] = []
    pos = 0
    for m in [*_MATH.finditer(text), None]:
        prose = text[pos:m.start()] if m else text[pos:]
        for tok in _TOKEN.findall(prose.casefold()):
            tok = _SAME.get(tok, tok)
            if tok in _PROSE_PUNCT or tok in FILLER_WORDS or tok in _TEX_NOISE:
                continue
            out.append((tok, tok.isalpha()))
        if m is None:
            break
        maths = m.group(0)
        inner = maths[2:-2] if maths.startswith(("$$", "\\(", "\\[")) else maths[1:-1]
        for tok in _TOKEN.findall(inner):
            tok = _SAME.get(tok, tok)
            if tok not in _TEX_NOISE and tok != "\\":
                out.append((tok, False))
        pos = m.end()
    return tuple(out)


def _one_edit(a: str, b: str) -> bool:
    """a and b differ by exactly one letter added, dropped or changed."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i + (len(a) == len(b)):] == b[i + 1:]


def near_identical(x: tuple[tuple[str, bool], ...], y: tuple[tuple[str, bool], ...]) -> bool:
    """Canonical forms equal token for token, but for one typo per long prose word."""
    if len(x) != len(y):
        return False
    for (a, prose_a), (b, prose_b) in zip(x, y):
        if a == b:
            continue
        if not (prose_a and prose_b and min(len(a), len(b)) >= TYPO_MIN_LETTERS and _one_edit(a, b)):
            return False
    return True


def group_answers(answers: dict[str, str | None]) -> list[AnswerGroup]:
    """student -> answer text  ->  groups covering every student exactly once."""
    key = tuple(sorted((s, normalise(t), t or "") for s, t in answers.items()))
    digest = hashlib.sha256(repr(key).encode()).hexdigest()
    return [AnswerGroup(g.id, list(g.members), [list(d) for d in g.duplicate_sets], g.empty)
            for g in _cached(digest, key)]


@lru_cache(maxsize=64)
def _cached(digest: str, key: tuple) -> tuple[AnswerGroup, ...]:
    del digest  # part of the cache key only
    by_text: dict[str, list[str]] = {}
    original: dict[str, str] = {}
    for student, text, raw in key:
        by_text.setdefault(text, []).append(student)
        original.setdefault(text, raw)
    empty = by_text.pop("", [])
    # most frequent answers first: a common answer anchors its group, a rare variant joins it
    texts = sorted(by_text, key=lambda t: (-len(by_text[t]), t))
    forms = {t: canonical(original[t]) for t in texts}
    clusters: list[list[str]] = []
    by_length: dict[int, list[list[str]]] = {}  # near-identical forms have the same length
    for t in texts:
        home = next((c for c in by_length.get(len(forms[t]), [])
                     if all(near_identical(forms[t], forms[o]) for o in c)), None)
        if home is None:
            home = []
            clusters.append(home)
            by_length.setdefault(len(forms[t]), []).append(home)
        home.append(t)
    groups = []
    for members_texts in clusters:
        members = sorted(s for t in members_texts for s in by_text[t])
        dups = sorted(sorted(by_text[t]) for t in members_texts if len(by_text[t]) > 1)
        groups.append(AnswerGroup(0, members, dups))
    if empty:
        groups.append(AnswerGroup(0, sorted(empty), [], empty=True))
    groups.sort(key=lambda g: (-g.size, g.empty, g.members[0]))
    for i, g in enumerate(groups, 1):
        g.id = i
    return tuple(groups)
