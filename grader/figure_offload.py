"""Where a figure plan (`grader.figures.draw_plan`) may be drawn out of this process.

`grade run`'s report worker (grader.report.background, the apps layer) registers itself here when it
starts; the checks (the judge layer) ask here, so they never import the layer above them
(tests/test_layers.py). No registered worker, or a busy one: None, and the caller draws itself.
"""

from __future__ import annotations

from typing import Callable, Protocol


class FigureWorker(Protocol):
    def draw(self, folder, plan: list[dict]) -> bool: ...


_find: "Callable[[], FigureWorker | None] | None" = None


def register(find: "Callable[[], FigureWorker | None]") -> None:
    """Register `find`: returns this process's idle figure worker, or None."""
    global _find
    _find = find


def figure_worker() -> "FigureWorker | None":
    """This process's idle figure worker, or None (none registered, or busy)."""
    return _find() if _find is not None else None
