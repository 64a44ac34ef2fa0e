# One command each: `make demo` serves the app, `make test` runs everything CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: demo quickstart test lint typecheck pytest clean

# Re-install only when the project's metadata changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# A key of its own for the local server, made once and kept out of git, so that
# restarting the demo keeps the same action IDs.
.bastion-secret: | $(VENV)/.installed
	umask 077 && $(BIN)/bastion keygen > $@

demo: quickstart

quickstart: $(VENV)/.installed .bastion-secret
	@echo "bastion quickstart on http://$(HOST):$(PORT)/"
	BASTION_SECRET_KEY="$$(cat .bastion-secret)" \
		$(BIN)/uvicorn --app-dir examples quickstart:app --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples

typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict src

pytest: $(VENV)/.installed
	$(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
