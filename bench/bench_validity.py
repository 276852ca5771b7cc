"""The grader on mistakes it was never told about: generated mutants and interface variants, per assignment.

    .venv/bin/python bench/bench_validity.py [--assignment vae,...] [--components c1,...] [--per-component 3]
                                             [--seed N | --dev] [--limit N] [--model] [--json out.json]
                                             [--report full.json] [--list-escapes]

For each assignment: every single-node mutant of the reference's solution blocks
(grader.mutation.operators) of a graded component; behaviour-changing ones (probed in process
against the reference, gradients included: grader.mutation.probes); of those, `--per-component`
per component (spread over operators; all with --per-component 0; which ones: --seed N, random by default
and printed, so that a run is a held-out measurement unless it repeats a seed; --dev: the fixed development
sample the grader was fixed against) planted into the assignment's
correct example submission and graded (unit checks; `--model` adds the model-level checks with
tiny budgets). Then the interface variants of the example (grader.mutation.variants), graded the
same way. Columns:

  generated   mutants of graded components      changing   behaviour-changing (probe differs)
  graded      of those, planted and graded      detected   lost points
  own only    lost points on their own component and nowhere else
  misnamed    feedback names a library mistake that does not behave like the mutant
  iface full  interface variants at full marks

Grading runs in this process with one warm sandbox zygote (each submission forks from it).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assignment", default="", help="comma-separated assignment ids (default: all)")
    ap.add_argument("--components", default="", help="comma-separated rubric components whose mutants are graded "
                    "(default: all; e.g. conv_vae.architecture,conv_vae.encode)")
    ap.add_argument("--per-component", type=int, default=3, help="mutants graded per component (0: all)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many mutants graded per assignment (0: no limit)")
    ap.add_argument("--model", action="store_true", help="also the model-level checks (tiny budgets; slow)")
    ap.add_argument("--no-variants", action="store_true", help="skip the interface variants")
    ap.add_argument("--variants-only", action="store_true", help="only the interface variants (no mutants)")
    ap.add_argument("--seed", type=int, default=None, help="which mutants are sampled (default: a random seed, printed)")
    ap.add_argument("--dev", action="store_true", help="the fixed development sample (no seed)")
    ap.add_argument("--json", type=Path, help='write {"seed", "graded", "detected", "own_component_only", "misnamed"} '
                    "(all assignments together) to this file")
    ap.add_argument("--report", type=Path, help="write every outcome (per assignment, per mutant) to this file")
    ap.add_argument("--list-escapes", action="store_true", help="print each mutant not detected or not own-only")
    args = ap.parse_args(argv)
    if args.dev and args.seed is not None:
        ap.error("--dev and --seed exclude each other")
    seed = None if args.dev else args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    print(f"sample: {'development (fixed)' if seed is None else f'--seed {seed}'}", flush=True)

    import torch

    torch.set_num_threads(1)  # the probes are tiny; more threads only contend on a shared machine
    from grader.sandbox.client import Zygote
    Zygote.shared().launch()
    from grader.mutation.validity import Study, sample
    from grader.mutation.variants import grade_variants
    from grader.rubric import available_rubrics

    rubrics = available_rubrics()
    wanted = [a for a in args.assignment.split(",") if a] or sorted(rubrics)
    if not args.assignment:  # an assignment without a probe ([assignment] probe) cannot be measured yet
        skipped = [a for a in wanted if not rubrics[a].probe]
        wanted = [a for a in wanted if rubrics[a].probe]
        if skipped:
            print(f"skipped (no [assignment] probe): {', '.join(skipped)}", flush=True)
    unknown = [a for a in wanted if a not in rubrics]
    if unknown:
        ap.error(f"unknown assignment(s) {', '.join(unknown)}; known: {', '.join(sorted(rubrics))}")
    rows, report = [], {}
    t_all = time.monotonic()
    for a in wanted:
        t0 = time.monotonic()
        study = Study(rubrics[a], model=args.model)
        pairs = [] if args.variants_only else study.mutants()
        only = {c for c in args.components.split(",") if c}
        if only - set(study.rubric.components):
            ap.error(f"unknown component(s) {', '.join(sorted(only - set(study.rubric.components)))} of {a}; "
                     f"known: {', '.join(sorted(study.rubric.components))}")
        pairs = [(m, c) for m, c in pairs if not only or c in only]
        changing = [(m, c) for m, c in pairs if study.changes_behaviour(m)]
        equivalent = [m.id for m, c in pairs if (m, c) not in changing]
        chosen = sample(changing, args.per_component or None, seed)
        if args.limit:
            chosen = chosen[: args.limit]
        t_probe = time.monotonic() - t0
        outcomes = []
        for i, (m, comp) in enumerate(chosen, 1):
            o = study.grade(m, comp)
            outcomes.append(o)
            print(f"  {a} {i}/{len(chosen)} {o.id}: lost {o.lost or '-'}"
                  + (f" named {o.named}" if o.named else "") + (f" MISNAMED {o.misnamed}" if o.misnamed else ""),
                  file=sys.stderr, flush=True)
        variants = [] if args.no_variants else grade_variants(study)
        row = {
            "assignment": a, "generated": len(pairs), "changing": len(changing), "graded": len(outcomes),
            "detected": sum(o.detected for o in outcomes), "own_only": sum(o.own_only for o in outcomes),
            "misnamed": sum(bool(o.misnamed) for o in outcomes),
            "variants": len(variants), "variants_full": sum(v["full"] for v in variants),
            "seconds": round(time.monotonic() - t0, 1), "probe_seconds": round(t_probe, 1),
        }
        rows.append(row)
        report[a] = {"summary": row, "equivalent": equivalent, "mutants": [o.as_dict() for o in outcomes],
                     "variants": variants}
    _table(rows)
    print(f"\n{time.monotonic() - t_all:.0f} s in all (grading under whatever load the machine has); "
          f"per component: {args.per_component or 'all'}; checks: {'unit + model-level (tiny)' if args.model else 'unit'}")
    if args.list_escapes:
        for a, r in report.items():
            for o in r["mutants"]:
                if not o["own_only"] or o["misnamed"]:
                    why = "not detected" if not o["detected"] else (
                        f"also charged on {sorted(set(o['lost']) - {o['component']})}" if o["detected"] and not o["own_only"] else "")
                    print(f"{a}  {o['id']}  [{o['component']}]  {why}  {'misnamed ' + str(o['misnamed']) if o['misnamed'] else ''}")
            for v in r["variants"]:
                if not v["full"]:
                    print(f"{a}  variant {v['id']}: lost {v['lost']}")
    if args.report:
        args.report.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.report}")
    if args.json:
        summary = {"seed": seed, "graded": sum(r["graded"] for r in rows), "detected": sum(r["detected"] for r in rows),
                   "own_component_only": sum(r["own_only"] for r in rows), "misnamed": sum(r["misnamed"] for r in rows),
                   "per_component": args.per_component, "assignments": [r["assignment"] for r in rows]}
        args.json.write_text(json.dumps(summary, indent=1))
        print(f"wrote {args.json}")
    return 0


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f} %)" if d else "-"


def _table(rows: list[dict]) -> None:
    head = ["assignment", "generated", "changing", "graded", "detected", "own only", "misnamed", "iface full"]
    lines = [[r["assignment"], str(r["generated"]), str(r["changing"]), str(r["graded"]), _pct(r["detected"], r["graded"]),
              _pct(r["own_only"], r["graded"]), str(r["misnamed"]), _pct(r["variants_full"], r["variants"])] for r in rows]
    if len(rows) > 1:
        tot = {k: sum(r[k] for r in rows) for k in rows[0] if k != "assignment"}
        lines.append(["all", str(tot["generated"]), str(tot["changing"]), str(tot["graded"]), _pct(tot["detected"], tot["graded"]),
                      _pct(tot["own_only"], tot["graded"]), str(tot["misnamed"]), _pct(tot["variants_full"], tot["variants"])])
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for line in lines:
        print("  ".join(x.ljust(w) for x, w in zip(line, widths)))


if __name__ == "__main__":
    sys.exit(main())
