# OIX developer commands. Each target creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint tools bench bench-codec bench-gateway bench-audit bench-liaison bench-console bench-replay clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## up: the embedded broker and every OIX service on the example agreement
up: $(STAMP)
	$(BIN)/oix up

## lint: ruff, mypy strict and the schema compatibility check
lint: $(STAMP)
	$(BIN)/ruff check services tests bench examples
	$(BIN)/ruff format --check services tests bench examples
	$(BIN)/mypy
	$(BIN)/mypy examples/partner
	$(BIN)/oix schemas check

## tools: Debian packages the tests use (stunnel4 + openssl for TLS, patch, a JDK and the Apache
## Avro Java library for the wire cross-check, chromium + chromium-driver for the liaison
## console's browser tests); apt only when something is missing
tools:
	@command -v stunnel4 >/dev/null && command -v openssl >/dev/null && command -v patch >/dev/null \
	  && command -v javac >/dev/null && test -f /usr/share/java/avro.jar \
	  && command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	       stunnel4 openssl patch default-jdk-headless libavro-java chromium chromium-driver; }

## test: lint, then the whole test suite against a real broker and real databases
test: lint tools
	$(BIN)/pytest

## bench: every benchmark, each printing a table with ratios against its baseline
bench: bench-codec bench-gateway bench-audit bench-liaison bench-console bench-replay

bench-codec: $(STAMP)
	$(BIN)/python bench/codec.py

bench-gateway: $(STAMP)
	$(BIN)/python bench/gateway.py

bench-audit: $(STAMP)
	$(BIN)/python bench/audit.py

bench-liaison: $(STAMP)
	$(BIN)/python bench/liaison.py

bench-console: $(STAMP) tools
	$(BIN)/python bench/console.py

bench-replay: $(STAMP)
	$(BIN)/python bench/replay.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .oix
