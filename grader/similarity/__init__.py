"""Code similarity across a class (`grade similarity`): copies found through renaming, reordering and
reformatting, with the starter code ignored. Never part of a student's report.

tokens.py (normalise) -> fingerprints.py (winnow) -> compare.py (index, score, evidence) ->
load.py (a class folder, the starter) -> output.py (CSV, HTML).
"""

from __future__ import annotations



from pathlib import Path


def run_similarity(root: Path, assignment: str | None = None, starter: Path | None = None,
                   top: int = 50, use_cache: bool = True, rubrics_dir: Path | None = None):
    """(comparison, rubric) for the class under `root`; raises SimilarityError for bad input."""
    from grader.rubric import RUBRICS_DIR, RubricError, available_rubrics
    from grader.similarity.compare import compare_documents
    from grader.similarity.load import SimilarityError, guess_assignment, load_class, starter_code

    try:
        rubrics = available_rubrics(rubrics_dir or RUBRICS_DIR)
    except RubricError as e:
        raise SimilarityError(str(e)) from None
    if assignment is not None and assignment not in rubrics:
        raise SimilarityError(f"unknown assignment {assignment!r}; known: {', '.join(sorted(rubrics))} (see `grade list`)")
    root = Path(root)
    rubric = rubrics[assignment] if assignment else guess_assignment(root, rubrics)
    hashes, origin = starter_code(rubric, starter)
    docs, skipped = load_class(root, rubric, use_cache)
    return compare_documents(docs, hashes, evidence_for=top, skipped=skipped, starter_origin=origin), rubric
