"""gradekit's one vocabulary: every internal name that may reach a reader, in words.

results.json keeps machine-oriented names (protection keys of the sandbox, training stop reasons,
the kind of failure of a check, component tags, figure tags); the report, the console and the web
app show them through this module only. A name not listed here is bookkeeping: the instructor's view
may show it, the student's never does (tests/test_report_layout.py renders every example report and
fails on any key of these tables appearing as a bare word).
"""

from __future__ import annotations

import math

from grader import history

# Sandbox protection key -> what it meant for the student's code, completing "Your code …" ("{}": the value).
# "" marks bookkeeping the student does not need (sizes of internal mounts, what was exposed to whom).
PROTECTIONS = {
    "process_group": "ran in its own group of processes, all stopped when grading ended",
    "network_isolated": "had no network access",
    "pid_namespace": "could not see or signal other processes",
    "filesystem_masking": "could not see the reference solution, the rubric or other students' work",
    "read_only_filesystem": "could write only in its own working folder",
    "private_tmp": "had a private temporary folder",
    "memory_limit_mb": "had a memory limit of {} MB",
    "user_namespace": "ran as an unprivileged user",
    "unprivileged_id": "ran without administrator rights",
    "capabilities_dropped": "held no administrator capabilities",
    "no_new_privs": "could not gain privileges",
    "seccomp": "could not call dangerous system functions",
    "process_limit": "could start at most {} processes or threads",
    "thread_limit": "could start at most {} threads",
    "max_tasks": "could start at most {} processes or threads",
    "disk_limit_mb": "could write at most {} MB",
    "writable_mb": "could write at most {} MB",
    "host_sockets_hidden": "could not reach any service of the grading machine",
    "allow_list_root": "saw only the system's programs and libraries, none of the grader's folders",
    "masked_paths": "",
    "socket_folders_covered": "",
    "sockets_covered": "",
    "sockets_left": "",
    "not_read_only": "",
    "writable_submission": "",
    "covered_for_sandbox_id": "",
    "fresh_proc": "",
    "unsandboxed": "",
}

# Why training stopped (a training history's stopped_because) -> a clause: one list, grader/history.py.
STOP_REASONS = history.STOP_REASONS

# TestResult.error (how a check's run of the student's code ended) -> a short label for the check.
FAILURE_KINDS = {
    "exception": "your code raised an error",
    "timeout": "too slow: stopped at the time limit",
    "crash": "your code's process ended",
    "value": "unusable return value",
    "import": "the module could not be imported",
    "budget": "not run: time budget used up",
    "internal": "grader error, not your fault",
    "blocked": "not judged: needs a part that could not be built",
    "error": "your code failed",
}

# What a failing case's message says, as the kind of fault a hidden check may name (first match wins; the
# case itself, its inputs and its numbers stay hidden).
FAULT_KINDS = (
    ("is missing", "a function or class this check calls is missing from your code"),
    ("must return a torch.Tensor", "your code returns something other than a torch.Tensor (e.g. a NumPy array)"),
    ("NaN", "your code returns NaN (or infinite) values where the correct result is finite"),
    ("Error: ", "your code raises an error"),
    ("shape", "your code returns a result of the wrong shape"),
    ("grad", "the gradients of your code are wrong"),
    ("dtype", "your code returns the wrong data type"),
    ("values differ", "your code returns wrong values"),
    ("statistic", "your code's random draws do not follow the right distribution"),
)


# Names of property checks' cases (grader/checks/properties.py) that hold a FAULT_KINDS needle.
_CASE_LABELS = ("call without gradients", "inputs that require grad", "non-square shapes")


def fault_kinds(output: str) -> list[str]:
    """The kinds of fault (FAULT_KINDS) that a check's failing cases ("- case: message" lines) show. A case's own
    name ("call without gradients", "non-square shapes", _CASE_LABELS) says what was tried, not what went wrong,
    and is not read (a missing function read as 'the gradients of your code are wrong')."""
    found = []
    for line in output.splitlines():
        if not line.startswith("- "):
            continue
        message = line
        for label in _CASE_LABELS:
            message = message.replace(label, "")
        for needle, words in FAULT_KINDS:  # a line's first kind only (a NumPy array "of shape (4, 3)" is no shape fault)
            if needle.lower() in message.lower():
                if words not in found:
                    found.append(words)
                break
    return found


# Observation models of the data (Dataset.likelihood) in words.
LIKELIHOODS = {"categorical": "a categorical distribution per pixel", "bernoulli": "a Bernoulli distribution per pixel"}

def data_description(name: str, n_train: int, n_val: int, n_test: int, shape, num_vals: int,
                     likelihood: str | None = None) -> str:
    """A data set in a student's words (the report's "Data set" line): 'digits: 1,350 training and 447 test images
    of 8×8 pixels, 17 grey levels' (n_val 0: no validation split), with the likelihood the models use when given."""
    size = "×".join(str(s) for s in shape)
    split = (f"{n_train:,} training, {n_val:,} validation and {n_test:,} test" if n_val
             else f"{n_train:,} training and {n_test:,} test")
    levels = "binary pixels" if num_vals == 2 else f"{num_vals} grey levels"
    model = f" ({LIKELIHOODS.get(likelihood, likelihood)})" if likelihood else ""
    return f"{name}: {split} images of {size} pixels, {levels}{model}"


# Component tags that are not the name of something the student wrote.
COMPONENT_TITLES = {"model": "Trained model", "interface": "Function signatures"}


def fmt_points(score: float | None) -> str:
    """A score as every reader sees it (report, console, summary, web app): rounded once, to 2 decimals.
    17.5 -> '17.5', 2.0 -> '2', 1/3 -> '0.33', None -> '–'. results.json and the CSV keep full precision."""
    if score is None:  # (named `score`: the self-check bundle ships this file, which must share no line with a solution)
        return "–"
    text = f"{round(float(score), 2):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def plural(n: float, word: str, words: str | None = None) -> str:
    """'1 case', '2 cases', '0.5 points' (a count other than exactly one takes the plural)."""
    text = f"{n:g}" if isinstance(n, float) else f"{n}"
    return f"{text} {word if n == 1 else (words or word + 's')}"


def points(x: float) -> str:
    """'1 point', '2.5 points' (2 decimals at most)."""
    return f"{fmt_points(x)} point{'' if round(float(x), 2) == 1 else 's'}"


def stop_reason(why: str) -> str:
    """The clause for a stop reason (older loops' words mapped, grader.history.stop_reason); an unknown one
    without its raw name (a student never reads an internal name)."""
    known = history.stop_reason(why)
    return STOP_REASONS[known] if known else ("training ended" if why else "training ran")


def failure_kind(kind: str) -> str:
    return FAILURE_KINDS.get(str(kind), "") if kind else ""


def protection(key: str, value: object) -> str | None:
    """The phrase for one sandbox protection, None when the student does not see it (unknown or bookkeeping)."""
    template = PROTECTIONS.get(str(key))
    if not template:
        return None
    if "{}" in template:
        try:
            n = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            n = math.nan
        return template.format(f"{n:g}" if not isinstance(value, bool) and math.isfinite(n) else "a fixed number of")
    return template


def component_title(tag: str, target: str = "") -> str:
    """A component as the student knows it: the name in their code (`MoGPrior.log_prob`), not the rubric's tag."""
    if tag in COMPONENT_TITLES:
        return COMPONENT_TITLES[tag]
    if target.endswith(".__init__"):
        return f"{target[:-len('.__init__')]} (constructor)"
    return target or tag


def training_note(stopped_because: str, epochs: int, seconds: float) -> str:
    """'Training ran all its epochs: 15 epochs in 3.1 s' (a model-level metric's note)."""
    text = stop_reason(stopped_because)
    return f"{text[0].upper()}{text[1:]}: {plural(int(epochs), 'epoch')} in {float(seconds or 0):.1f} s"


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a word boundary, with '…' when cut (never mid-word)."""
    text = str(text)
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"


def check_title(name: str, component: str, tag: str = "") -> str:
    """A check's name under its component's heading: 'values (…)', not 'log_normal_diag: values (…)' (the report
    and the console group checks by component; the name keeps its prefix where the component is not said)."""
    head, sep, rest = str(name).partition(": ")
    names = {component, tag, component.rsplit(".", 1)[-1], tag.rsplit(".", 1)[-1]} - {""}
    return rest if sep and rest and head in names else str(name)

