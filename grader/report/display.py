"""What a student reads, from results.json's machine-oriented fields: metrics in words and units with the
reference beside them, and the sandbox's protections as plain sentences (paths: grader/redact.py).

Metric declarations come from results.json's `metric_info` (written by the engine from each assignment's
`METRICS`, see grader/metrics.py); a key without a declaration is bookkeeping and goes to the instructor's
view only.
"""

from __future__ import annotations

import math

from grader import glossary
from grader.metrics import COMMON, Metric

PER_CLASS_COLUMNS = 10  # classes per row of a per-class table (10 numbers fit the page width)

# ---- numbers --------------------------------------------------------------------------------------
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_NON_FINITE_TEXT = {"nan": "not a number (NaN)", "inf": "infinite", "+inf": "infinite", "infinity": "infinite",
                    "-inf": "minus infinity", "-infinity": "minus infinity"}


def as_number(value: object) -> float | None:
    """A metric's value as a float (NaN/inf included: results.json writes them as text), None when absent/other."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in _NON_FINITE_TEXT:
        return float(value.strip().lower().replace("infinity", "inf"))
    return None


def fmt_compact(x: object) -> str:
    """fmt_value for a narrow table cell: 2 significant digits beyond 10⁶, NaN and ∞ as symbols."""
    v = as_number(x)
    if v is not None and not math.isfinite(v):
        return "NaN" if math.isnan(v) else "∞" if v > 0 else "−∞"
    return fmt_value(x, 2).replace("\u202f", "")  # no spaces around ×: the cell is narrow and never wraps


def fmt_value(x: object, digits: int = 3) -> str:
    """A number for a student: 4 significant digits, 'a.bc × 10ⁿ' beyond 10⁶ (`digits` - 1 decimals), non-finite
    values in words."""
    v = as_number(x)
    if v is None:
        return "not computed" if x is None else str(x)[:80]
    if math.isnan(v):
        return _NON_FINITE_TEXT["nan"]
    if math.isinf(v):
        return "infinite" if v > 0 else "minus infinity"
    if isinstance(x, int) and abs(x) < 10**6:
        return f"{x:,}".replace(",", " ")
    if v != 0 and not 1e-4 <= abs(v) < 1e6:
        mantissa, exponent = f"{v:.{max(0, digits - 1)}e}".split("e")
        # narrow no-break spaces; table cells holding numbers never wrap (report.css)
        return f"{mantissa.replace('-', '−')}\u202f×\u202f10{str(int(exponent)).translate(_SUPERSCRIPT)}"
    return f"{v:.4g}".replace("-", "−")  # one minus sign in every column


def comparison(student: object, reference: object, better: str) -> tuple[str, str]:
    """(words, level) comparing the student's value with the reference's; level: good | ok | low | ''."""
    s, r = as_number(student), as_number(reference)
    if s is None or r is None:
        return ("no value from your model" if s is None and student is None else ""), ("low" if student is None else "")
    if not math.isfinite(s):
        return "your value is not finite: the model's numbers broke down", "low"
    if not math.isfinite(r) or r == 0:
        return "", ""
    rel = (s - r) / abs(r)
    if abs(rel) < 0.0005:
        return "same as the reference", "good"
    worse = (rel > 0) if better == "lower" else (rel < 0) if better == "higher" else None
    # every difference says its direction: better/worse when the measure has one, else higher/lower
    verdict = (" higher" if rel > 0 else " lower") if worse is None else (" worse" if worse else " better")
    level = "" if worse is None else "good" if not worse or abs(rel) <= 0.05 else "ok" if abs(rel) <= 0.25 else "low"
    if abs(rel) < 10:
        return f"{abs(rel) * 100:.1f} %{verdict}", level
    if s / r < 0:
        return f"far{verdict}: of the opposite sign", level
    return f"far{verdict}: {fmt_value(s / r, 2)} times the reference", level


def training_sentence(value: object) -> str:
    """A training summary {stopped_because, best_epoch, seconds, message} (or text) in one sentence."""
    if not isinstance(value, dict):
        return str(value)
    why, best = value.get("stopped_because") or "", value.get("best_epoch")
    seconds = as_number(value.get("seconds"))
    text = glossary.stop_reason(why)
    if value.get("message"):
        text += f": {value['message']}"
    if best:
        text += f"; the model was evaluated with the weights of its best epoch, {best}"
    if seconds is not None and math.isfinite(seconds):
        text += f" ({seconds:.1f} s)"
    return text[0].upper() + text[1:] + "."


# ---- metrics --------------------------------------------------------------------------------------
def _per_class(value: object) -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(value)]
    return []


def metric_tables(metrics: dict, info: dict) -> dict:
    """The report's view of results.json metrics: {rows, per_class, notes, internal}.

    rows: [{label, unit, student, reference, diff, level}] (kind "value"); per_class: [{label, unit, class_label,
    chunks: [[{cls, student, reference, level}]]}]; notes: [(label, text)]; internal: [(key, repr)] for the
    instructor only (undeclared keys included)."""
    out: dict = {"rows": [], "per_class": [], "notes": [], "internal": []}
    for key, value in (metrics or {}).items():
        raw = info.get(key) if isinstance(info, dict) else None
        spec = Metric.from_json(raw) if isinstance(raw, dict) else COMMON.get(key)
        if spec is None or spec.kind == "internal" or not spec.label:
            out["internal"].append((str(key), repr(value)[:500]))
            continue
        if spec.kind == "note":
            text = training_sentence(value) if isinstance(value, dict) else fmt_value(value) \
                if as_number(value) is not None else spec.values.get(str(value), str(value))
            out["notes"].append((spec.label, text, spec.note))
        elif spec.kind == "per_class":
            value = value if isinstance(value, dict) else {}
            stu, ref = dict(_per_class(value.get("student"))), _per_class(value.get("reference"))
            classes = [c for c, _ in ref] + [c for c in stu if c not in dict(ref)]
            refd = dict(ref)
            cells = []
            for c in classes:
                words, level = comparison(stu.get(c), refd.get(c), spec.better)
                cells.append({"cls": c, "student": fmt_compact(stu.get(c)) if c in stu else "–",
                              "reference": fmt_compact(refd.get(c)) if c in refd else "–", "level": level})
            chunks = [cells[i:i + PER_CLASS_COLUMNS] for i in range(0, len(cells), PER_CLASS_COLUMNS)]
            out["per_class"].append({"label": spec.label, "unit": spec.unit, "class_label": spec.class_label,
                                     "chunks": chunks, "note": spec.note,
                                     "missing": not stu and value.get("student") is None})
        else:
            pair = value if isinstance(value, dict) else {"student": value, "reference": None}  # {}: not computed
            words, level = comparison(pair.get("student"), pair.get("reference"), spec.better)
            out["rows"].append({"label": spec.label, "unit": spec.unit, "note": spec.note,
                                "student": fmt_value(pair.get("student")),
                                "reference": fmt_value(pair.get("reference")) if pair.get("reference") is not None else "–",
                                "diff": words, "level": level,
                                "better": {"lower": "lower is better", "higher": "higher is better"}.get(spec.better, "")})
    return out


# ---- sandbox --------------------------------------------------------------------------------------
def sandbox_sentences(protections: dict) -> tuple[list[str], list[str]]:
    """(active, inactive) protections as short phrases completing 'Your code …' (grader.glossary.PROTECTIONS).
    Never a path, a raw value or an internal name: keys the glossary does not put in words are left out."""
    active, inactive = [], []
    for key, value in (protections or {}).items():
        phrase = glossary.protection(key, value)
        if phrase is None:
            continue
        on = bool(value) and str(value).lower() not in ("0", "false", "no", "off", "none")
        (active if on else inactive).append(phrase)
    return active, inactive
