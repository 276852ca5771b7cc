"""Reports: per-student PDF/HTML (`render_report`), manual grades (`apply_manual_csv`), class summary
(`render_summary`). Everything works from results.json alone; no student code runs here.

    from grader.report import render_report, render_summary, apply_manual_csv
    html, pdf = render_report(load_result("reports/alice"), Path("reports/alice"))

Names are imported lazily so that `import grader.report` stays cheap (WeasyPrint and pandas load on use).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "render_report": "render", "build_html": "render", "markdown_to_html": "render", "TEMPLATES_DIR": "render",
    "local_only_fetcher": "render",
    "apply_manual_csv": "manual", "check_manual_csv": "manual", "read_manual_csv": "manual", "validate_entries": "manual", "apply_manual": "manual",
    "load_results": "manual", "ManualGradeError": "manual", "ManualEntry": "manual",
    "render_summary": "summary", "summary_html": "summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
