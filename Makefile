# Two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  := torch==2.14.1 torchvision==0.29.1
# Where pip looks for torch. Empty: pip's configured index (PyPI's Linux wheels bundle CUDA: ~6 GB to
# download). On a machine without an NVIDIA GPU, the CPU build is ~0.2 GB:
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
SETUP_LOG := $(VENV)/setup.log

.PHONY: setup demo test test-fast bench clean browser

setup: $(STAMP)

# Quiet unless it fails: pip's output goes to .venv/setup.log, shown in full when a step fails.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV) (first time only: torch and the libraries in pyproject.toml; log: $(SETUP_LOG))"
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip > $(SETUP_LOG) 2>&1 || { cat $(SETUP_LOG); exit 1; }
	@# torch first, pinned to the build that installs from local disk here; pyproject allows a range.
	@$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH) >> $(SETUP_LOG) 2>&1 || \
	  $(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "torch>=2.2,<3" torchvision >> $(SETUP_LOG) 2>&1 || \
	  { cat $(SETUP_LOG); exit 1; }
	@$(PY) -m pip install -q -e '.[test]' >> $(SETUP_LOG) 2>&1 || { cat $(SETUP_LOG); exit 1; }
	@touch $(STAMP)
	@echo "set-up done"

# One submission in detail, then the whole folder as a class (bob is up to date: not regraded).
demo: $(STAMP)
	$(VENV)/bin/grade list
	$(VENV)/bin/grade run submissions/bob --out reports
	$(VENV)/bin/grade batch submissions --out reports -j 2
	$(VENV)/bin/grade summary reports

# Every test, on as many workers as the machine has cores (pytest-xdist; each test file stays on one worker, so
# its module fixtures are built once); the slowest tests are listed at the end.
test: $(STAMP) browser
	@echo "make test: about 10-15 minutes on 2 CPU cores without a GPU (model training, sandboxes, PDFs)"
	$(PY) -m pytest -p no:cacheprovider -n auto --dist loadfile --durations=10

# Pure modules and the framework's own tests (no sandbox, no training), every rubric included
# (tests/test_assignments.py): a minute or so. `make test` runs everything.
FAST := tests/test_layers.py tests/test_rubric.py tests/test_history.py tests/test_assignments.py \
        tests/test_check_helpers.py tests/test_protocol.py tests/test_data.py tests/test_answers.py \
        tests/test_model_level_framework.py
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(FAST)

# The browser tests of `grade serve` drive the system's Chromium (Playwright's own download is not used).
# As root we install it; otherwise tests/test_serve_browser.py is skipped with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser tests (apt-get; log: $(VENV)/apt.log)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) > $(VENV)/apt.log 2>&1 || \
	      { tail -20 $(VENV)/apt.log; echo "could not install chromium: the browser tests will be skipped"; }; \
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
