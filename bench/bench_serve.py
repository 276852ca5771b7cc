"""Benchmark `grade serve`: `python bench/bench_serve.py [--students 300] [--repeat 5]`.

First the answer groups' safety on the labelled set of tests/answer_group_cases.py (groups mixing answers the key
grades differently: must be 0; grade-keeping rewrites grouped with their original).
Then a synthetic class of N students (one results.json each) whose answers to Q1 are variations of six model
answers (reworded, reordered, with LaTeX, some exact duplicates, some empty). Rows:
- grouping N answers (near-identical answers only), not cached;
- opening the question page with N answers with nothing cached (Markdown of every answer + grouping), and again
  (what a TA sees: the server prepares every question in a background thread at start);
- one grading decision (apply an item; the answer carries the question's whole new state).
Target from the issue: opening a question with 300 answers in <= 0.5 s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grader.results import GradeResult, QuestionResult, TestResult, save_result  # noqa: E402

BASES = [
    r"We sample $\epsilon \sim \mathcal{N}(0, I)$ and set $z = \mu + \sigma \odot \epsilon$, so the gradient flows through $\mu$ and $\sigma$.",
    "z = mu + sigma * eps with eps drawn from a standard normal; sampling becomes a deterministic function of the parameters.",
    r"The reparameterization trick: $z = g_\phi(\epsilon, x)$ with $\epsilon \sim p(\epsilon)$ independent of $\phi$.",
    "Instead of sampling z directly from q(z|x) we sample noise and transform it, which makes the ELBO differentiable.",
    "It lets us backpropagate through the sampling step by moving the randomness into an auxiliary variable.",
    r"$$z = \mu_\phi(x) + \exp\left(\tfrac{1}{2}\log\sigma^2_\phi(x)\right) \cdot \epsilon, \quad \epsilon \sim \mathcal{N}(0, 1)$$",
]
FILLERS = ["In short,", "Basically", "As seen in class,", "Note that", "", "", ""]


def synthetic_answers(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.05:
            out.append("")
        elif r < 0.25 and out:
            out.append(rng.choice([a for a in out if a] or [BASES[0]]))  # an exact copy of someone else's
        else:
            words = rng.choice(BASES).split(" ")
            if rng.random() < 0.5:  # drop or swap a word
                j = rng.randrange(len(words))
                words.pop(j) if rng.random() < 0.5 else words.insert(j, rng.choice(["really", "then", "also"]))
            out.append(" ".join(filter(None, [rng.choice(FILLERS), *words, f"(student {i})" if rng.random() < 0.3 else ""])))
    return out


def make_class(folder: Path, n: int) -> dict[str, str]:
    answers = {f"student{i:03d}": a for i, a in enumerate(synthetic_answers(n))}
    for s, a in answers.items():
        save_result(GradeResult(s, "vae", [TestResult("check", "1.1", 1.0, 2.0, tags=["x"])],
                                [QuestionResult("Q1", "Explain the reparameterization trick.", 1.0, a or None),
                                 QuestionResult("Q2", "Write the ELBO.", 2.0, a[::-1] or None)]), folder)
    return answers


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rows = []
    from grader.serve import groups, markup

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from answer_group_cases import measure

    st = measure(groups.group_answers)
    print(f"answer groups on the labelled set: {st['answers']} answers -> {st['groups']} groups; "
          f"{st['mixed']} groups mix answers the key grades differently ({st['wrong_pairs']} wrong pairs); "
          f"{st['variants_joined']}/{st['variants']} grade-keeping rewrites grouped with their original")
    from grader.serve.app import create_app, new_token, open_classroom

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        answers = make_class(folder, args.students)

        def group_uncached():
            groups._cached.cache_clear()
            return groups.group_answers(answers)

        rows.append((f"group {args.students} answers (near-identical only)", timed(group_uncached, args.repeat)))
        found = group_uncached()
        classroom, store = open_classroom(folder)
        token = new_token()
        app = create_app(classroom, store, token, port=1)
        client = app.test_client()
        client.get("/login")
        with client.session_transaction() as s:
            csrf = s["csrf"]
        client.post("/login", data={"csrf": csrf, "name": "bench", "token": token, "next": "/"})
        with client.session_transaction() as s:
            csrf = s["csrf"]

        def open_page(cold: bool):
            if cold:  # nothing cached: every answer parsed, the answers grouped
                groups._cached.cache_clear()
                markup.answer_html.cache_clear()
            r = client.get("/q/vae:Q1")
            assert r.status_code == 200 and r.data.count(b'class="answer"') == args.students, r.status_code

        rows.append((f"open a question with {args.students} answers, nothing cached", timed(lambda: open_page(True), args.repeat)))
        rows.append(("open it again (answers' HTML and groups cached)", timed(lambda: open_page(False), args.repeat)))
        item = client.post("/api/q/vae:Q1/items", json={"points": 1, "comment": "Correct"},
                           headers={"X-CSRF-Token": csrf}).json["created"]
        students = iter(sorted(answers))

        def decide():
            r = client.post(f"/api/q/vae:Q1/grade/{next(students)}", json={"op": "item", "item": item, "applied": True},
                            headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200

        rows.append(("one decision (apply an item), answered with the new state", timed(decide, args.repeat)))
        rows.append(("overview page", timed(lambda: client.get("/"), args.repeat)))
        page_kb = len(client.get("/q/vae:Q1").data) / 1024
        store.close()

    print(f"grade serve, {args.students} students; {len(found)} answer groups, "
          f"{sum(len(g.duplicate_sets) for g in found)} sets of exact duplicates; question page {page_kb:.0f} KiB")
    print(f"{'what':<62} {'mean s':>8} {'min s':>8}")
    for name, times in rows:
        print(f"{name:<62} {statistics.mean(times):8.3f} {min(times):8.3f}")


if __name__ == "__main__":
    main()
