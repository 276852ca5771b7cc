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

from grader import glossary
from grader.results import TestResult


# A property (grader/checks/properties.py) as the fault it names, for the feedback of the checks it merges.
PROPERTY_FAULTS = {
    "differentiable": "missing or wrong gradients",
    "stochastic": "random draws that repeat",
    "pure": "an input changed in place",
    "dtype": "a result in the wrong data type (float32 or float64)",
    "batch": "a result that breaks on a batch of one or a non-square shape",
    "range": "non-finite values on extreme but legal inputs",
}


def describe_cause(cause: str, tests: list[TestResult] = ()) -> str:
    """A cause in the student's words: the named mistake's message (never its id), or the property's fault."""
    if cause.startswith("mistake:"):
        mid = cause.split(":", 1)[1]
        message = next((m.get("message", "") for t in tests for m in t.mistakes
                        if isinstance(m, dict) and m.get("id") == mid and m.get("message")), "")
        return f"the same mistake ({message})" if message else "the same mistake"
    return f"the same fault ({PROPERTY_FAULTS[cause]})" if cause in PROPERTY_FAULTS else "the same fault"


def check_label(t: TestResult) -> str:
    """How feedback names another check: 'check 2.1' (the number the report and `grade check` show)."""
    return f"check {t.number}" if t.number else f"the check '{t.name}'"


def _labels(tests: list[TestResult]) -> str:
    """'check 2.2', 'checks 2.2 and 2.3', 'checks 2.2, 2.3 and 2.9'."""
    if all(t.number for t in tests):
        nums = [t.number for t in tests]
        return f"check{'s' if len(nums) > 1 else ''} " + (", ".join(nums[:-1]) + " and " + nums[-1]
                                                          if len(nums) > 1 else nums[0])
    return ", ".join(check_label(t) for t in tests)


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
        what = describe_cause(cause, [t for t, _ in hits])
        for t, lost in hits:
            t.charged_once.append({"cause": cause, "charged_in": keep.check, "seen_by": ids})
            # in the student's words: check numbers and the mistake's message, never an id (results.json keeps them)
            if t is keep:
                others = _labels([o for o, _ in hits if o is not t])
                t.output += f"\nCharged once, here: {what} also fails {others}, which do not charge it again."
            else:
                t.score = round(min(t.max_score, t.score + lost), 4)
                t.output += (f"\nNot charged again here ({glossary.points(lost)} given back): {what} is charged once, "
                             f"in {check_label(keep)}.")


def drop_ruled_out(tests: list[TestResult], ruled_out: dict[str, str]) -> None:
    """Take back, in place, every mistake name that a later check ruled out (`Session.ruled_out`: mistake id ->
    the check that called the mistake's own function and saw neither the correct output nor the mistake's): the
    name leaves the feedback and the loss keeps no known cause (so it is not merged with another check's)."""
    by_id = {t.check: t for t in tests}
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
                         f"{_where(ruled_out[m['id']], by_id)} shows that your code does not make it.")


def _where(check_id: str, by_id: dict) -> str:
    """A check named by its id, as the student reads it ('check 2.3'; 'another check' when it is not in this run)."""
    t = by_id.get(check_id)
    return check_label(t) if t is not None else "another check"


def drop_ruled_out_causes(tests: list[TestResult], ruled_out: dict) -> None:
    """Forget, in place, a cause that a check showed does not explain the student's values (`Session.causes_ruled_out`:
    (component, cause) -> that check): its losses keep no known cause, so none of them is refunded by `charge_once`.
    Without this a student could disguise a wrong function as one dtype slip (every case failing on its dtype,
    before its values are compared) and be charged for one check instead of all."""
    for t in tests:
        for component, cause in ruled_out:
            if t.component == component and t.lost_by_cause:
                t.lost_by_cause.pop(cause, None)
