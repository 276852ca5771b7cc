"""What a student handed in -> what the engine grades: the module source (+ a line map back to a notebook),
the written answers (+ which file they came from), and the student's own figures.

The engine asks `prepare(folder, rubric)` and nothing else. Nothing here runs student code: a notebook is
parsed, never executed, and the module built from it is imported later, in the sandbox.

Which file is the module (docs/notebooks.md):
1. the assignment's module file (`vae.py`) when present: it wins over any notebook (the notebook's markdown
   and figures are still read);
2. otherwise one notebook: the one named like the module (`vae.ipynb`), else the only `.ipynb`, else the one
   defining the most of the assignment's names; two that cannot be told apart are not guessed between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from grader.submission.answers import AnswerSet, collect_answers
from grader.submission.images import StudentFigure, find_figures, write_figures
from grader.submission.notebook import ModuleSource, NotebookError, defined_names, module_from_notebook, read_notebook

__all__ = ["Submission", "prepare", "fits", "notebooks_in", "ModuleSource", "AnswerSet", "StudentFigure"]


@dataclass
class Submission:
    """One submission, read but not run."""
    module: ModuleSource | None  # None: no module could be built (see errors)
    answers: AnswerSet
    figures: list[StudentFigure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # submission-level problems for the report (student's to fix)
    notes: list[str] = field(default_factory=list)  # what was chosen and why

    @property
    def needs_source(self) -> bool:
        """True when the sandbox must be given `module.source` (it is not a file of the submission)."""
        return self.module is not None and self.module.is_notebook

    def translate(self, text: str) -> str:
        return self.module.translate(text) if self.module is not None else text

    def summary(self, figures: list[dict] | None = None) -> dict:
        """Plain data for results.json (extra_data.gradekit.submission)."""
        m = self.module
        return {
            "module_from": m.origin if m else "",
            "kind": "notebook" if m is not None and m.is_notebook else "module" if m else "none",
            "left_out": [lo.to_json() for lo in m.left_out] if m is not None and m.is_notebook else [],
            "answers_from": self.answers.source,
            "answer_sources": dict(self.answers.found),
            "notes": self.notes + self.answers.notes,
            "figures": figures or [],
        }


def notebooks_in(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*.ipynb") if p.is_file() and not p.is_symlink()
                  and not p.name.startswith("."))


def _target_names(rubric) -> set[str]:
    return {str(t).split(".")[0] for t in getattr(rubric, "component_targets", {}).values()}


def _pick_notebook(folder: Path, rubric) -> tuple[Path | None, str]:
    """(notebook, note) or (None, why none could be chosen)."""
    books = notebooks_in(folder)
    if not books:
        return None, ""
    if len(books) == 1:
        return books[0], ""
    stem = Path(rubric.module).stem
    named = [b for b in books if b.stem == stem]
    names = ", ".join(b.name for b in books)
    if len(named) == 1:
        return named[0], f"The folder holds {len(books)} notebooks ({names}); graded {named[0].name}, named like the module."
    wanted = _target_names(rubric)
    counts = sorted(((len(wanted & defined_names(b)), b) for b in books), key=lambda c: -c[0])
    if counts[0][0] > counts[1][0]:
        b = counts[0][1]
        return b, (f"The folder holds {len(books)} notebooks ({names}); graded {b.name}, which defines the most of "
                   f"the assignment's functions and classes ({counts[0][0]} of {len(wanted)}).")
    return None, (f"The folder holds {len(books)} notebooks ({names}) and none can be told to be the submission: "
                  f"hand in one notebook, or name it {stem}.ipynb")


def fits(folder: Path, rubric) -> bool:
    """Could this folder be a submission of `rubric` (its module, or a notebook named like it or defining its names)?"""
    folder = Path(folder)
    if (folder / rubric.module).is_file():
        return True
    books = notebooks_in(folder)
    if any(b.stem == Path(rubric.module).stem for b in books):
        return True
    wanted = _target_names(rubric)
    return any(len(wanted & defined_names(b)) >= max(1, len(wanted) // 2) for b in books)


def prepare(folder: Path, rubric) -> Submission:
    """Read the submission in `folder` for `rubric`. Never raises for anything in the folder."""
    folder = Path(folder)
    module: ModuleSource | None = None
    errors, notes = [], []
    nb, nb_name = None, ""
    book, why = _pick_notebook(folder, rubric)
    if why:
        (notes if book is not None else errors).append(why)
    if book is not None:
        try:
            nb = read_notebook(book)
            nb_name = book.name
        except NotebookError as e:
            errors.append(str(e))
        except OSError as e:
            errors.append(f"{book.name} could not be read ({e.strerror or e})")
    py = folder / rubric.module
    if py.is_file():
        module = ModuleSource(source="", origin=rubric.module, module_file=rubric.module)
        if book is not None:
            notes.append(f"Both {rubric.module} and {book.name} were handed in: {rubric.module} was graded (the module "
                         f"file wins); {book.name} was read only for written answers and figures.")
    elif nb is not None:
        try:
            module = module_from_notebook(book, rubric.module, nb)
            notes.append(f"Code taken from the notebook {book.name} ({module.code_cells} code cells; "
                         f"{len(module.left_out)} top-level statements not run, listed in the report).")
        except NotebookError as e:
            errors.append(str(e))
    if module is None and not errors:
        errors.append(f"the submission has no {rubric.module} (nor a notebook): nothing could be graded")
    elif module is None:
        errors.append(f"no code could be graded ({rubric.module} is missing and the notebook could not be used)")
    answers = collect_answers(folder, [q.id for q in rubric.questions], rubric.answers, nb, nb_name)
    figures = find_figures(folder, nb, nb_name, notes)
    return Submission(module=module, answers=answers, figures=figures, errors=errors, notes=notes)


__all__ += ["write_figures"]
