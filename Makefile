# Two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test test-fast bench clean browser

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

test: $(STAMP) browser
	$(PY) -m pytest -q

# Pure modules and the framework's own tests (no sandbox, no training), every rubric included
# (tests/test_assignments.py): a minute or so. `make test` runs everything.
FAST := tests/test_layers.py tests/test_rubric.py tests/test_history.py tests/test_assignments.py \
        tests/test_check_helpers.py tests/test_protocol.py tests/test_data.py tests/test_answers.py
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(FAST)

# The browser tests of `grade serve` drive the system's Chromium (Playwright's own download is not used).
# As root we install it; otherwise tests/test_serve_browser.py is skipped with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
	      echo "could not install chromium: the browser tests will be skipped"; \
	  else echo "no chromium and not root: browser tests skipped (sudo apt-get install chromium)"; fi

bench: $(STAMP)
	$(PY) bench/bench_grading.py --model
	$(PY) bench/bench_report.py
	$(PY) bench/bench_training.py
	$(PY) bench/bench_assignments.py
	$(PY) bench/bench_batch.py
	$(PY) bench/bench_cold.py --repeat 3 --batch 10
	$(PY) bench/bench_startup.py --repeat 3 --batch 6

clean:
	rm -rf reports .pytest_cache build *.egg-info
