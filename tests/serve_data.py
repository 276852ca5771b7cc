"""A small reports folder for the `grade serve` tests, written from GradeResult objects (no grading runs)."""

from __future__ import annotations

import threading
from pathlib import Path

from grader.results import GradeResult, QuestionResult, TestResult, save_result

# Q1 answers: three identical (a duplicate group), two close rewordings, one different, one empty.
Q1 = {
    "alice": r"We sample $\epsilon \sim \mathcal{N}(0, I)$ and set $z = \mu + \sigma \odot \epsilon$.",
    "bob": "z = mu + sigma * eps with eps drawn from a standard normal",
    "carol": "z = mu + sigma * eps with eps drawn from a standard normal",
    "dana": "z = mu + sigma * eps  with eps drawn from a standard normal",
    "eve": "The trick moves the randomness into eps so gradients flow through mu and sigma.",
    "frank": "",
}
Q2 = {s: (r"$$\log q(z|x) = -\tfrac{1}{2}\sum_l \left(\log 2\pi + \log\sigma_l^2\right)$$" if s != "frank" else None)
      for s in Q1}


def make_reports(out: Path, students: dict[str, str] | None = None) -> Path:
    """Write OUT/<student>/results.json for the students of Q1 (assignment vae, questions Q1=1 pt, Q2=2 pts)."""
    for student, q1 in (students or Q1).items():
        result = GradeResult(
            student=student, assignment="vae",
            tests=[TestResult("log_normal_diag: values", "1.1", 1.5, 2.0, tags=["log_normal_diag"])],
            questions=[QuestionResult("Q1", "Explain the reparameterization trick.", 1.0, q1 or None),
                       QuestionResult("Q2", "Write down the log-probability of the encoder.", 2.0, Q2.get(student))],
        )
        save_result(result, out)
    return out


class RunningServer:
    """`grade serve`'s server on 127.0.0.1 and a free port, in a thread of the test process."""

    def __init__(self, reports: Path, submissions: Path | None = None):
        from grader.serve.server import make_server

        self.server = make_server(reports, "127.0.0.1", 0, submissions=submissions)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.sign_in_url = self.server.sign_in_url  # what `grade serve` prints
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.server.store.close()
