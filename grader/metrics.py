"""How a model-level metric is shown to a student: its name in words, unit, which way is better, kind.

Each assignment's checks module declares `METRICS = {key: Metric(...)}` next to the code that records
`ctx.session.metrics[key]`; `COMMON` holds keys every assignment may record. The engine copies the
declarations of the keys it recorded into results.json (`extra_data.gradekit.metric_info`, see
docs/results-format.md), so the report, the web app and any other reader need nothing but results.json.

A metric's value in results.json is one of
- `{"student": x, "reference": y}` with numbers, `None` (not computed) or text ("nan", "inf": results.json
  is strict JSON) — kind "value";
- `{"student": {class: x, ...} | [x, ...], "reference": ...}` — kind "per_class" (one number per class);
- a number or text — kind "note" (a fact about the run, e.g. the data set), shown under the table;
- anything — kind "internal" (bookkeeping such as cache status): shown only in the instructor's view.
Keys without a declaration are shown in the instructor's view only (so an internal key never reaches a student).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

KINDS = ("value", "per_class", "note", "internal")


@dataclass(frozen=True)
class Metric:
    """Display declaration of one metric. `unit` is shown in parentheses after the label ("nats per image");
    `better` is "lower", "higher" or "" (no direction: the difference is shown without a verdict)."""

    label: str
    unit: str = ""
    better: str = ""
    kind: str = "value"
    class_label: str = "class"  # per_class: what one class is called ("digit")
    note: str = ""  # a few words on what the number means, shown beside it
    values: dict = field(default_factory=dict, hash=False, compare=False)  # note: raw text -> words ("trained" -> ...)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Metric {self.label!r}: kind must be one of {KINDS}, not {self.kind!r}")
        if self.better not in ("lower", "higher", ""):
            raise ValueError(f"Metric {self.label!r}: better must be 'lower', 'higher' or '', not {self.better!r}")

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in ("", None, {})}

    @classmethod
    def from_json(cls, d: dict) -> "Metric":
        fields = {k: d[k] for k in ("label", "unit", "better", "kind", "class_label", "note") if isinstance(d.get(k), str)}
        fields.setdefault("label", "")
        if isinstance(d.get("values"), dict):
            fields["values"] = {str(k): str(v) for k, v in d["values"].items()}
        if fields.get("kind") not in KINDS:
            fields["kind"] = "internal"
        if fields.get("better") not in ("lower", "higher", ""):
            fields["better"] = ""
        return cls(**fields)


COMMON: dict[str, Metric] = {
    "data": Metric("Data set", kind="note"),
    "source": Metric("Model evaluated", kind="note",
                     values={"trained": "trained by the grader with your code",
                             "checkpoint": "the model.pt you submitted (not retrained)"}),
    "reference_cache": Metric("reference model cache", kind="internal"),
    "data_spec": Metric("data set given on the command line", kind="internal"),
    "figures_error": Metric("figure drawing error", kind="internal"),
}


def metric_info(declared: dict[str, Metric] | None, metrics: dict) -> dict[str, dict]:
    """The declarations (as JSON) of the recorded `metrics` keys: the assignment's own first, then COMMON.
    Keys declared nowhere are left out (the report then shows them to the instructor only)."""
    declared = declared or {}
    out = {}
    for key in metrics:
        spec = declared.get(key) or COMMON.get(key)
        if spec is not None:
            out[key] = spec.to_json()
    return out
