"""Answers to one question grouped by similarity, so one decision can be given to a whole group.

TF-IDF over character n-grams (robust to small rewordings and to LaTeX spelt slightly differently) and
agglomerative clustering with average linkage on cosine distance, cut at `threshold`: two answers end up
together when their groups are on average at most `threshold` apart. Exact duplicates (same text once
whitespace and case are ignored) always share a group and are flagged. Empty answers form one group.
Deterministic: the same answers give the same groups. Runs offline (scikit-learn).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache

DEFAULT_THRESHOLD = 0.5


@dataclass
class AnswerGroup:
    id: int  # 1-based, groups sorted by size (largest first), then by first member
    members: list[str]  # students, sorted
    duplicate_sets: list[list[str]] = field(default_factory=list)  # students whose answers are identical
    empty: bool = False  # the students gave no answer

    @property
    def size(self) -> int:
        return len(self.members)


def normalise(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip().casefold()


def group_answers(answers: dict[str, str | None], threshold: float = DEFAULT_THRESHOLD) -> list[AnswerGroup]:
    """student -> answer text  ->  groups covering every student exactly once."""
    key = tuple(sorted((s, normalise(t)) for s, t in answers.items()))
    digest = hashlib.sha256(repr((key, threshold)).encode()).hexdigest()
    return [AnswerGroup(g.id, list(g.members), [list(d) for d in g.duplicate_sets], g.empty)
            for g in _cached(digest, key, threshold)]


@lru_cache(maxsize=64)
def _cached(digest: str, key: tuple, threshold: float) -> tuple[AnswerGroup, ...]:
    del digest  # part of the cache key only
    by_text: dict[str, list[str]] = {}
    for student, text in key:
        by_text.setdefault(text, []).append(student)
    empty = by_text.pop("", [])
    texts = sorted(by_text)  # distinct non-empty answers
    labels = _cluster(texts, threshold)
    clusters: dict[int, list[str]] = {}
    for text, label in zip(texts, labels):
        clusters.setdefault(label, []).append(text)
    groups = []
    for members_texts in clusters.values():
        members = sorted(s for t in members_texts for s in by_text[t])
        dups = sorted(sorted(by_text[t]) for t in members_texts if len(by_text[t]) > 1)
        groups.append(AnswerGroup(0, members, dups))
    if empty:
        groups.append(AnswerGroup(0, sorted(empty), [], empty=True))
    groups.sort(key=lambda g: (-g.size, g.empty, g.members[0]))
    for i, g in enumerate(groups, 1):
        g.id = i
    return tuple(groups)


def _cluster(texts: list[str], threshold: float) -> list[int]:
    if len(texts) < 2:
        return [0] * len(texts)
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectors = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit_transform(texts)
    model = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                    distance_threshold=threshold)
    return model.fit_predict(vectors.toarray()).tolist()
