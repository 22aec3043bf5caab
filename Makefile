# dbops: the two commands are `make demo` and `make test`; everything else is a helper for them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all demo test install system-deps ui db-up db-down bench lint clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,k8s]'
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

# Debian's PgBouncer (10k-user load tests), promtool (alert rules), PostgreSQL 15 (TLS tests, second version), chromium
# (the browser test drives it through playwright: no browser is downloaded), pgBadger (log reports) and pgAudit (audit
# logging on PostgreSQL 15); and the venv module when $(PYTHON) is Debian's without it. Each is detected by a file its
# package installs; only the missing ones are installed, and the services the new packages start (PgBouncer,
# Prometheus, PostgreSQL 15's default cluster) are stopped again.
system-deps:
	@missing=""; \
	command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing="$$missing pgbouncer"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	[ -x /usr/lib/postgresql/15/bin/postgres ] || missing="$$missing postgresql-15 postgresql-contrib"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v pgbadger >/dev/null || missing="$$missing pgbadger"; \
	[ -f /usr/lib/postgresql/15/lib/pgaudit.so ] || missing="$$missing postgresql-15-pgaudit"; \
	[ -x $(BIN)/python ] || $(PYTHON) -c 'import ensurepip' 2>/dev/null || \
	  missing="$$missing $$($(PYTHON) -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])')"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  for started in pgbouncer:pgbouncer prometheus:prometheus postgresql-15:postgresql; do \
	    case " $$missing " in *" $${started%%:*} "*) $$SUDO service $${started#*:} stop >/dev/null 2>&1 || true;; esac; \
	  done; \
	fi

# The demo manages two databases (dbops.example.yaml, unless DBOPS_CONFIG names another file): `dbops`, the reference,
# and `shop`, backing up to an S3 server (SeaweedFS on 127.0.0.1:8333) the demo starts and stops. Unless exported, the
# S3 credentials are made up for the run: they reach only that server's private (0600) configuration.
DEMO_CONFIG ?= dbops.example.yaml
demo: system-deps install
	DBOPS_CONFIG=$${DBOPS_CONFIG:-$(DEMO_CONFIG)} \
	SHOP_S3_ACCESS_KEY_ID=$${SHOP_S3_ACCESS_KEY_ID:-dbops-demo} \
	SHOP_S3_SECRET_ACCESS_KEY=$${SHOP_S3_SECRET_ACCESS_KEY:-$$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')} \
	$(BIN)/dbops demo

# The whole suite on the embedded PostgreSQL 18, then the version-sensitive tests again on Debian's PostgreSQL 15.
PG15_TESTS ?= dbops_tests/migrate dbops_tests/schema
test: system-deps install
	$(BIN)/pytest $(PYTEST_ARGS)
	DBOPS_TEST_PG_BIN=/usr/lib/postgresql/15/bin $(BIN)/pytest $(PYTEST_ARGS) $(PG15_TESTS)

# The UI of the demo's two targets (the shop target's S3 server runs during `make demo` only), on 127.0.0.1:$(PORT):
# `make ui PORT=3001`.
PORT ?= 3000
ui: install
	DBOPS_CONFIG=$${DBOPS_CONFIG:-$(DEMO_CONFIG)} $(BIN)/dbops ui --port $(PORT)

db-up: install
	$(BIN)/dbops db up

db-down: install
	$(BIN)/dbops db down

bench: system-deps install
	@for script in bench/*.py; do echo "# $$script"; $(BIN)/python $$script || exit 1; done

lint: install
	$(BIN)/ruff check dbops dbops_tests bench

clean:
	-$(BIN)/dbops db down 2>/dev/null
	rm -rf .dbops .pytest_cache .ruff_cache
