# The two commands a newcomer needs: `make demo` (the main job) and `make test` (ruff lint + format check,
# then pytest, which includes the layering contracts).
# Both create or reuse .venv, install torch first (TORCH_SPEC, default the CPU wheel 2.13.0)
# when no torch is importable, then the project in editable mode. Idempotent.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nllb-mini-installed

.PHONY: setup test demo clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x "$(PY)" ]; then echo ">> creating virtual environment $(VENV)"; $(PYTHON) -m venv $(VENV); \
	  else echo ">> reusing virtual environment $(VENV)"; fi
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo ">> torch present: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else echo ">> installing $(TORCH_SPEC) first"; $(PY) -m pip install --disable-pip-version-check -q "$(TORCH_SPEC)"; fi
	@echo ">> installing the project: pip install -e '.[dev]'"
	@$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)
	@echo ">> environment ready ($(VENV))"

test: setup
	@echo ">> lint and format check (ruff), then the test suite (layering contracts: tests/test_layering.py)"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest tests

demo: setup
	@echo ">> running the end-to-end demo (recipes/nllb_mini.sh)"
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash recipes/nllb_mini.sh
