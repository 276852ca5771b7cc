"""Page-level polish of the PDF: a last page that holds only a few lines is pulled back onto the page before.

WeasyPrint lays the report out once; when its last page is almost empty (a paragraph's last lines, one
unanswered question), the report is laid out again with slightly tighter margins and spacing, and the
tighter layout is kept only if it has fewer pages. Everything else about the report stays as designed.
"""

from __future__ import annotations

LAST_PAGE_MIN_FILL = 0.15
"""Share of the last page's content height below which the page counts as near-empty."""

# Passed to WeasyPrint as a user stylesheet, which the report's own (author) stylesheet would override:
# hence !important.
TIGHT_CSS = """
@page { margin: 13mm 15mm 15mm 15mm !important; }
html { line-height: 1.33 !important; }
figure { margin: 2mm 0 3mm 0 !important; }
table.data td, table.data th { padding-top: 0.45mm !important; padding-bottom: 0.45mm !important; }
"""


def _walk_flow(box):
    """Every layout box in the page's flow (margin boxes — footers, page numbers — left out)."""
    from weasyprint.formatting_structure import boxes as B

    if isinstance(box, B.MarginBox):
        return
    yield box
    for child in getattr(box, "children", None) or []:
        yield from _walk_flow(child)


def page_fill(page) -> float | None:
    """Share (0..1) of a rendered page's content height that its flow uses; None if it cannot be read
    (the layout boxes are WeasyPrint internals, so an unknown version just skips the polish)."""
    from weasyprint.formatting_structure import boxes as B

    try:
        pb = page._page_box
        top, height = pb.content_box_y(), pb.height
        bottom = top
        for box in _walk_flow(pb):
            if isinstance(box, (B.TextBox, B.ReplacedBox)) or (isinstance(box, B.BlockBox) and not box.children):
                bottom = max(bottom, box.border_box_y() + box.border_height())
        return (bottom - top) / height if height else None
    except Exception:  # noqa: BLE001 - polish only; never fail a report on it
        return None


def near_empty_last_page(document) -> bool:
    """True when a multi-page document ends on a page that is less than LAST_PAGE_MIN_FILL full."""
    if len(document.pages) < 2:
        return False
    fill = page_fill(document.pages[-1])
    return fill is not None and fill < LAST_PAGE_MIN_FILL


def render_without_near_empty_last_page(html_doc):
    """Render a `weasyprint.HTML`; if the last page is near-empty, try once with TIGHT_CSS and keep the
    layout with fewer pages. Returns the weasyprint Document."""
    import weasyprint

    document = html_doc.render()
    if near_empty_last_page(document):
        tight = html_doc.render(stylesheets=[weasyprint.CSS(string=TIGHT_CSS)])
        if len(tight.pages) < len(document.pages):
            return tight
    return document
