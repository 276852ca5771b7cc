# Two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	# torch first, pinned to the build that installs from local disk here; pyproject allows a range.
	$(PY) -m pip install $(TORCH) || $(PY) -m pip install "torch>=2.2,<3" torchvision
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

# One submission in detail, then the whole folder as a class (bob is up to date: not regraded).
demo: $(STAMP)
	$(VENV)/bin/grade list
	$(VENV)/bin/grade run submissions/bob --out reports
	$(VENV)/bin/grade batch submissions --out reports -j 2
	$(VENV)/bin/grade summary reports

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/bench_grading.py --model
	$(PY) bench/bench_report.py
	$(PY) bench/bench_training.py
	$(PY) bench/bench_assignments.py
	$(PY) bench/bench_batch.py

clean:
	rm -rf reports .pytest_cache build *.egg-info
