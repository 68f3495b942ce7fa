# Two commands: `make demo` (offline main job) and `make test` (whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.stamp

.PHONY: demo test test-fast bench gpu-check clean-venv

# Reinstall only when requirements.txt is newer than the stamp.
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: $(PYTHON) is \
	Python %d.%d; the pinned numpy, scipy and scikit-learn need 3.11 or newer: run make PYTHON=python3.11 (or \
	newer)." % sys.version_info[:2])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py
	@echo "Next (README, Quick start): . $(VENV)/bin/activate, then python train_student.py -h"

test: $(STAMP)
	$(PY) -m pytest -q tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

bench: $(STAMP)
	$(PY) bench/run_matrix.py

# On a machine with one GPU and its own python3 (no venv, no network): every device path, < 5 min.
gpu-check:
	$(PYTHON) bench/gpu_check.py

clean-venv:
	rm -rf $(VENV)
