"""Bench: the grader's evaluation of a trained VAE (`vae_evaluation.evaluate`, K importance samples, plus the
samples score and the figures' arrays) on 1 and 2 torch threads, alternated in one process, and whether the
numbers are the same bits.

    .venv/bin/python bench/bench_evaluation.py                 # threads 2,1,2,1; the cached reference and a variant
    .venv/bin/python bench/bench_evaluation.py --threads 1,2 --repeat 3

The models: the `vae` rubric's reference (from the model cache; trained once when absent) and the same
weights perturbed by 1 % noise (a second "student"). Prints wall and CPU seconds per evaluation and exits 1
when a thread count changed any number.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="2,1", help="comma-separated torch thread counts, alternated")
    ap.add_argument("--repeat", type=int, default=2, help="rounds over the thread counts")
    args = ap.parse_args()
    from grader.checks import Session, vae_model
    from grader.checks import vae_evaluation as evaluation
    from grader.rubric import available_rubrics

    rubric = available_rubrics()["vae"]
    ctx = types.SimpleNamespace(rubric=rubric, device=torch.device("cpu"), session=Session())
    s = vae_model.MODEL.settings(rubric)
    data = vae_model.MODEL.load_data(s)
    ref = vae_model.MODEL.reference(ctx, s, data)
    noise = np.random.default_rng(0)
    state = {k: v.detach().numpy() + 0.01 * noise.standard_normal(v.shape).astype(np.float32)
             for k, v in ref.model.state_dict().items()}
    other = vae_model.MODEL.load_reference(ctx, s, data, state, {"metrics": {}, "history": {}}).model
    threads = [int(t) for t in args.threads.split(",")]
    seen: dict[str, list] = {}
    times: dict[int, list[tuple[float, float]]] = {t: [] for t in threads}
    for _ in range(args.repeat):
        for n in threads:
            torch.set_num_threads(n)
            for name, model in (("reference", ref.model), ("variant", other)):
                w, c = time.perf_counter(), _cpu()
                out = evaluation.evaluate(model, data.x_test, data.y_test, K=s.K)
                out.pop("seconds")
                out["samples_score"] = vae_model._samples_plausibility(ref.model, model, data)
                out["arrays"] = [evaluation.reconstructions(model, data.x_test[:16]).tobytes(),
                                 evaluation.samples(model, n=16, seed=0).tobytes(),
                                 evaluation.encode_means(model, data.x_test).tobytes()]
                times[n].append((time.perf_counter() - w, _cpu() - c))
                seen.setdefault(name, []).append(repr(out))
    print(f"K={s.K}, {len(data.x_test)} test images; load average {__import__('os').getloadavg()[0]:.1f}")
    print(f"{'threads':>8s} {'evaluations':>12s} {'wall s (median)':>16s} {'CPU s (median)':>15s}")
    for n, rows in times.items():
        print(f"{n:8d} {len(rows):12d} {statistics.median(w for w, _ in rows):16.2f} "
              f"{statistics.median(c for _, c in rows):15.2f}")
    same = all(len(set(v)) == 1 for v in seen.values())
    print("numbers identical across thread counts:", "yes" if same else "NO")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
