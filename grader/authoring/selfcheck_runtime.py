"""The self-check of a release bundle (`python selfcheck.py [path/to/module.py]`).

Runs the assignment's public checks with the course's engine (`grader.engine.grade_submission`,
shipped next to this file) on the student's file, in this process. `ctx.ref` answers from the
recordings made at release time (`grader.authoring.replay.ReplayRef`); a check that asks the
reference something not recorded is reported as "not checked offline" and earns nothing here.
Exit status: 0 when every public check passed, 1 when one failed, 3 when none failed but some could
not be checked offline, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

BUNDLE = Path(__file__).resolve().parent
UNVERIFIED: dict[str, str] = {}
NO_GRADIENT = "it needs gradients of the reference that this release did not record (too large to ship)"
FAILED_COMPONENTS: set[str] = set()
UPSTREAM: dict[str, list[str]] = {}
UPSTREAM_NOTE = ("This check uses your code of other components, and checks of {} failed above. The course's grader "
                 "does not charge a mistake twice: once it has named a mistake there, it also accepts the reference "
                 "with that mistake here. The self-check cannot name mistakes: fix those components first.")


def _load():
    import numpy as np

    meta = json.loads((BUNDLE / "rubric.json").read_text(encoding="utf-8"))
    records = json.loads((BUNDLE / "recordings.json").read_text(encoding="utf-8"))
    with np.load(BUNDLE / "recordings.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return meta, records, arrays


def _rubric(meta):
    from grader.authoring.replay import NotRecorded
    from grader.checks import Case, StudentValueError
    from grader.sandbox.client import StudentCodeError
    from grader.rubric import CheckSpec, Limits, Rubric

    class BundleRubric(Rubric):
        def check_function(self, spec, shared=None):
            fn = Rubric.check_function(self, spec, shared=shared)

            def guarded(ctx):
                ok = False
                try:
                    fn(ctx)
                    ok = True
                except NotRecorded as e:
                    UNVERIFIED[spec.id] = str(e)
                    ctx.cases.append(Case("checked offline", False, str(e)))
                except Exception as e:
                    if isinstance(e, (StudentCodeError, StudentValueError)) or not _gradient_missing(ctx):
                        raise
                    ctx.cases.append(Case("checked offline", False, NO_GRADIENT))
                finally:
                    failed = not ok or any(not c.passed for c in ctx.cases)
                    upstream = sorted(FAILED_COMPONENTS - {spec.component})
                    if failed and getattr(ctx, "asked_variants", False) and upstream:
                        # Online, this check forgives mistakes already diagnosed in the components it
                        # builds on; offline there is no diagnosis, so say so rather than double-charge.
                        UPSTREAM[spec.id] = upstream
                        ctx.notes.append(UPSTREAM_NOTE.format(", ".join(upstream)))
                    if failed:
                        FAILED_COMPONENTS.add(spec.component)
                if _gradient_missing(ctx) and any(not c.passed for c in ctx.cases):
                    UNVERIFIED[spec.id] = NO_GRADIENT
            return guarded

    a = meta["assignment"]
    checks = tuple(CheckSpec(id=c["id"], name=c["name"], component=c["component"], check=c["check"],
                             points=float(c["points"]), visibility="public", rtol=c["rtol"], atol=c["atol"],
                             rtol64=c.get("rtol64"), atol64=c.get("atol64"),
                             hint=c.get("hint", ""), tags=tuple(c.get("tags", ())), kind=c.get("kind", ""))
                   for c in meta["checks"]
                   if c.get("offline", True))
    return BundleRubric(id=a["id"], title=a["title"], course=a.get("course", ""), module=a["module"],
                        reference="grader.authoring.replay", checks_module=a["checks"], mistakes_module="",
                        answers=a.get("answers", "answers.md"), limits=Limits(**meta["limits"]), checks=checks,
                        mistakes=(), questions=(), path=BUNDLE / "rubric.json")


def _gradient_missing(ctx) -> bool:
    session = object.__getattribute__(ctx.ref, "_session")
    return bool(getattr(session, "gradient_not_recorded", False))


def _replay_context(records, arrays):
    """The check context of the offline self-check: the reference answers from the recorded values."""
    from grader.authoring.replay import ReplayRef
    from grader.checks import CheckContext

    class ReplayContext(CheckContext):
        def __init__(self, spec, *args, **kwargs):
            super().__init__(spec, *args, **kwargs)
            self.ref = ReplayRef(records.get(spec.id, {}), arrays, self.device).ref()
            self.asked_variants = False
            self.stand_ins.names = set()  # offline there is no reference to answer stand-in calls

        def reference_variants(self):
            self.asked_variants = True  # a composite check: it forgives mistakes charged upstream
            return super().reference_variants()

        def diagnose(self, *args, **kwargs):  # (no mutants offline: a no-op that must not set the flag)
            asked = self.asked_variants
            try:
                return super().diagnose(*args, **kwargs)
            finally:
                self.asked_variants = asked

    return ReplayContext


def _outside_modules() -> list[str]:
    """`grader`/`reference` modules loaded from anywhere but this bundle (there must be none)."""
    out = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("grader", "reference"):
            f = getattr(module, "__file__", None)
            if f is None or not Path(f).resolve().is_relative_to(BUNDLE):
                out.append(name)
    return sorted(out)


def _submission(path: Path, module: str, tmp: Path) -> Path:
    if path.is_dir():
        if not (path / module).is_file() and not any(path.glob("*.ipynb")):
            raise SystemExit(f"error: {path} holds no {module} (nor a notebook); pass the file, or the folder that holds it")
        return path
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist")
    if path.name == module:
        return path.parent
    if path.suffix == ".ipynb":  # graded like the course's grader does: its definitions only, nothing run
        shutil.copyfile(path, tmp / path.name)
        return tmp
    shutil.copyfile(path, tmp / module)  # checked under the name the grader will use
    return tmp


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="selfcheck.py", description="Run the public checks on your file, offline.")
    parser.add_argument("path", nargs="?", default=".", help="your module file, or the folder that holds it (default: .)")
    parser.add_argument("--only", default="", help="comma-separated components (tags) to check")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for your code (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    import grader

    if Path(grader.__file__).resolve().parent.parent != BUNDLE:
        print(f"error: imported the wrong `grader` package ({grader.__file__}); run selfcheck.py from the bundle",
              file=sys.stderr)
        return 2
    from grader.engine import GradeOptions, GradingError, grade_submission

    meta, records, arrays = _load()
    rubric = _rubric(meta)
    context = _replay_context(records, arrays)
    only = [t.strip() for t in args.only.split(",") if t.strip()]
    with tempfile.TemporaryDirectory(prefix="selfcheck-") as tmp:
        folder = _submission(Path(args.path), rubric.module, Path(tmp))
        try:
            result = grade_submission(folder, rubric, GradeOptions(only=only, public_only=True, device=args.device,
                                                                   write_figures=False, namespaces=False, secret=""),
                                      context=context)
        except GradingError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    rows = []
    ran = {t.check: t for t in result.tests}
    components: list[str] = []
    for c in meta["checks"]:
        if only and not any(tag == c["component"] or tag in c.get("tags", ()) or c["id"] == tag
                            or c["id"].startswith(tag + ".") for tag in only):
            continue
        if c["component"] not in components:
            components.append(c["component"])
        number = f"{components.index(c['component']) + 1}.{sum(r['component'] == c['component'] for r in rows) + 1}"
        t = ran.get(c["id"])
        if t is None:
            status, score, output = "not checked offline", None, ("Only the course's grader can check this: the "
                                                                  "self-check cannot run it offline.")
        elif t.check in UNVERIFIED:
            status, score, output = "not checked offline", None, f"Only the course's grader can check this: {UNVERIFIED[t.check]}."
        else:
            status, score, output = t.status, t.score, t.output
        rows.append({"id": c["id"], "number": number, "name": c["name"], "component": c["component"], "status": status,
                     "score": score, "max_score": float(c["points"]), "output": output,
                     "failed_upstream": UPSTREAM.get(c["id"], [])})
    passed = sum(r["status"] == "passed" for r in rows)
    unchecked = sum(r["status"] == "not checked offline" for r in rows)
    if args.json:
        print(json.dumps({"assignment": rubric.id, "bundle_root": str(BUNDLE), "checks": rows,
                          "outside_modules": _outside_modules(),
                          "errors": result.errors, "passed": passed, "total": len(rows),
                          "output": result.student_output[-4000:]}, indent=1))
    else:
        _print(rubric, rows, result, passed, unchecked)
    failed = sum(r["status"] == "failed" for r in rows)
    return 1 if failed else (3 if unchecked else 0)


def _print(rubric, rows, result, passed, unchecked) -> None:
    print(f"Self-check — {rubric.title} (public checks only, offline)\n")
    mark = {"passed": "PASS", "failed": "FAIL", "not checked offline": "N/A "}
    for r in rows:
        pts = "?" if r["score"] is None else f"{r['score']:g}"
        print(f"[{mark.get(r['status'], r['status'])}] {r['number']:>5}  {r['name']}  ({pts}/{r['max_score']:g})")
        if r["status"] != "passed":
            for line in r["output"].splitlines():
                print(f"            {line}")
    for e in result.errors:
        print(f"! {e.splitlines()[0]}")
    total = sum(r["max_score"] for r in rows)
    got = sum(r["score"] or 0 for r in rows)
    print(f"\n{passed}/{len(rows)} public checks passed ({got:g}/{total:g} points)"
          + (f"; {unchecked} could not be checked offline (the course's grader will)" if unchecked else "")
          + ". Hidden checks and written answers are graded after the deadline.")
