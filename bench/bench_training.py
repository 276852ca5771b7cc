"""Bench: train the reference VAE with the grading harness and evaluate it, on this machine.

    .venv/bin/python bench/bench_training.py                      # digits, default TrainConfig
    .venv/bin/python bench/bench_training.py --threads 1 2 --max-epochs 200 --time-budget 600
    .venv/bin/python bench/bench_training.py --data mnist-binary:../shared/data/mnist

Prints one row per thread count: seconds per epoch, epochs run (and why it stopped), the best
epoch, test negative ELBO, test NLL (importance sampling, K samples) and the seconds the NLL took.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from grader.checks import vae_evaluation as evaluation  # noqa: E402
from grader.data import load_dataset  # noqa: E402
from grader.harnesses.vae import TrainConfig, build_vae, train_vae  # noqa: E402
from reference import vae as ref  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    ap.add_argument("--max-epochs", type=int, default=TrainConfig.max_epochs)
    ap.add_argument("--patience", type=int, default=TrainConfig.patience)
    ap.add_argument("--time-budget", type=float, default=TrainConfig.time_budget_s)
    ap.add_argument("--M", type=int, default=TrainConfig.M)
    ap.add_argument("--K", type=int, default=100, help="importance samples per test image")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    t = time.perf_counter()
    data = load_dataset(args.data)
    load_s = time.perf_counter() - t
    print(f"# {data.summary()} (loaded in {load_s:.2f} s)")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, device {args.device}, "
          f"max_epochs={args.max_epochs}, patience={args.patience}, time budget {args.time_budget:g} s, M={args.M}")
    header = ("threads", "s/epoch", "epochs", "stopped", "best", "train s", "test -ELBO", f"test NLL K={args.K}",
              "NLL s", "recon MSE", "KL/dim")
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        cfg = TrainConfig(max_epochs=args.max_epochs, patience=args.patience, time_budget_s=args.time_budget,
                          M=args.M, seed=args.seed, num_threads=threads)
        model = build_vae(ref, data.D, data.num_vals, data.likelihood, cfg).to(args.device)
        hist = train_vae(model, data.x_train, data.x_val, cfg, args.device)
        m = evaluation.load_reference_model(hist.state_dict, data.D, cfg.L, cfg.M, data.num_vals, data.likelihood,
                                            cfg.num_components, args.device)
        neg_elbo = evaluation.negative_elbo(m, data.x_test)
        t = time.perf_counter()
        nll = evaluation.nll_importance_sampling(m, data.x_test, K=args.K)
        nll_s = time.perf_counter() - t
        rows.append((str(threads), f"{np.mean(hist.epoch_seconds):.3f}", str(len(hist.epochs)), hist.stopped_because,
                     str(hist.best_epoch), f"{hist.seconds:.1f}", f"{neg_elbo:.2f}",
                     f"{nll.mean():.2f} ± {nll.std(ddof=1) / np.sqrt(len(nll)):.2f}", f"{nll_s:.2f}",
                     f"{evaluation.reconstruction_error(m, data.x_test):.2f}",
                     f"{evaluation.posterior_collapse(m, data.x_test):.3f}"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
