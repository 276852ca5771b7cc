"""Scoring rules of hand-graded questions (Gradescope-style rubric items, positive scoring).

A question's score for one student:
- ungraded (None) while no rubric item is applied and no score override is set (a comment alone grades nothing);
- else the override when set, otherwise the sum of the applied items' points clipped to [0, max_score].
Items may carry negative points (deductions) so that "full marks minus a mistake" is two items.
Scores are computed on read, never stored: editing an item's points changes every student who has it.
"""

from __future__ import annotations

import math
from typing import Iterable

EPS = 1e-9


class ScoreError(ValueError):
    """A score or item's points that is not a number in the allowed range; the message says what to type."""


def question_score(item_points: Iterable[float], override: float | None, max_score: float) -> float | None:
    """The score of one answer (see the module docstring); rounded to 4 decimals like results.json."""
    points = list(item_points)
    if override is not None:
        return round(float(override), 4)
    if not points:
        return None
    return round(min(max(sum(points), 0.0), float(max_score)), 4)


def parse_number(raw: object, low: float, high: float, what: str) -> float:
    """`raw` (text from a form, or a number) as a finite float in [low, high]; ScoreError otherwise.

    A decimal comma ("1,5") is accepted; "", text, nan and inf are not."""
    if isinstance(raw, bool):
        raise ScoreError(f"{what}: {raw!r} is not a number")
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        text = str(raw if raw is not None else "").strip()
        if text.count(",") == 1 and "." not in text:
            text = text.replace(",", ".")
        try:
            value = float(text)
        except ValueError:
            shown = text if len(text) <= 40 else text[:39] + "…"
            raise ScoreError(f"{what}: {shown!r} is not a number; type e.g. 1 or 0.5") from None
    if not math.isfinite(value):
        raise ScoreError(f"{what}: {raw!r} is not a finite number")
    if value < low - EPS or value > high + EPS:
        raise ScoreError(f"{what}: {value:g} is outside [{low:g}, {high:g}]")
    return value


def feedback_text(items: Iterable[tuple[float, str]], comment: str) -> str:
    """What the student reads under the question: one line per applied item, then the free comment."""
    lines = [f"{text} ({points:+g})" for points, text in items]
    if comment.strip():
        lines.append(comment.strip())
    return "\n".join(lines)
