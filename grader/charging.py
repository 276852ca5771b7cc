"""One root cause, charged once per component (docs/grading.md, "Charged in proportion").

Several checks of one component can fail for the same reason: a missing −½·log 2π fails the values, the
reductions and the extreme inputs of `log_normal_diag`; a float32 slip fails every case with float32 inputs
and the `dtype` property. A failing case carries its cause when the check knows it (`Case.cause`: a named
library mistake "mistake:<id>", a property such as "dtype" or "pure"); an unknown cause is never merged, so an
unidentified mistake (or code that does not run) costs every check it fails, as before.

`charge_once` keeps, for each (component, cause) seen by two or more checks, the loss in the check that lost
the most to it (the largest weight among those checks) and gives the others their points for it back. Each
check involved says so in its feedback and in results.json (`extra_data.charged_once`).
"""

from __future__ import annotations

from grader.results import TestResult


def describe_cause(cause: str) -> str:
    if cause.startswith("mistake:"):
        return f"the mistake `{cause.split(':', 1)[1]}`"
    return f"the `{cause}` property"


def charge_once(tests: list[TestResult]) -> None:
    """Refund, in place, every loss to a cause already charged in another check of the same component."""
    seen: dict[tuple[str, str], list[tuple[TestResult, float]]] = {}
    for t in tests:
        for cause, lost in (t.lost_by_cause or {}).items():
            if lost > 1e-9:
                seen.setdefault((t.component, cause), []).append((t, lost))
    for (_, cause), hits in seen.items():
        if len(hits) < 2:
            continue
        # the largest loss; on a tie, the property's own check (`<component>.property.<cause>`), then the heavier check
        keep, _ = max(hits, key=lambda h: (round(h[1], 9), h[0].check.endswith(f".property.{cause}"), h[0].max_score))
        ids = [t.check for t, _ in hits]
        what = describe_cause(cause)
        for t, lost in hits:
            others = ", ".join(i for i in ids if i != t.check)
            t.charged_once.append({"cause": cause, "charged_in": keep.check, "seen_by": ids})
            if t is keep:
                t.output += f"\nCharged once, here: {what} was also seen by {others}, which do not charge it again."
            else:
                t.score = round(min(t.max_score, t.score + lost), 4)
                t.output += (f"\nNot charged again here ({lost:.4g} point(s) given back): {what} is charged once, "
                             f"in {keep.check}.")


def drop_ruled_out(tests: list[TestResult], ruled_out: dict[str, str]) -> None:
    """Take back, in place, every mistake name that a later check ruled out (`Session.ruled_out`: mistake id ->
    the check that called the mistake's own function and saw neither the correct output nor the mistake's): the
    name leaves the feedback and the loss keeps no known cause (so it is not merged with another check's)."""
    for t in tests:
        dropped = [m for m in t.mistakes if m.get("id") in ruled_out]
        if not dropped:
            continue
        t.mistakes = [m for m in t.mistakes if m not in dropped]
        for m in dropped:
            t.lost_by_cause.pop(f"mistake:{m['id']}", None)
            line = f"Diagnosis: {m['message']}." + (f" Hint: {m['hint']}" if m.get("hint") else "")
            t.output = "\n".join(x for x in t.output.split("\n") if x != line)
            t.output += (f"\nNot diagnosed: the values first looked like a known mistake, but "
                         f"{ruled_out[m['id']]} shows that your code does not make it.")

