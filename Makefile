# One command each: `make demo` serves the app, `make test` runs everything CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: demo quickstart test lint typecheck audit pytest browser clean

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
	BASTION_ALLOWED_ORIGINS="http://$(HOST):$(PORT)" \
	BASTION_DATA_DIR="$${BASTION_DATA_DIR:-data}" \
		$(BIN)/uvicorn --app-dir examples quickstart:app --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples

typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict src

pytest: $(VENV)/.installed browser
	$(BIN)/pytest

# The browser tests (tests/e2e) drive Debian's Chromium through Playwright; Playwright's
# own browser download is never used. Nothing to do when it is already installed.
CHROMIUM := /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@test -x $(CHROMIUM) || { \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends chromium; }

# Every action of the quickstart passes `bastion audit` (rate limits, bounded fields, …).
audit: $(VENV)/.installed
	cd examples && QUICKSTART_PASSWORD=audit BASTION_ALLOWED_ORIGINS=http://127.0.0.1 \
		BASTION_SECRET_KEY="$$(../$(BIN)/bastion keygen)" BASTION_DATA_DIR="$$(mktemp -d)" \
		../$(BIN)/bastion audit quickstart:bastion > /dev/null && echo "bastion audit: quickstart clean"

test: lint typecheck audit browser pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
