# Two commands do all set-up on a fresh clone: `make dev` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Lambda runs python3.13; prefer it, else any python3 (3.11+ is supported).
PY313 := $(shell PYENV_VERSION=3.13 pyenv which python 2>/dev/null || command -v python3.13 2>/dev/null)
PYTHON ?= $(if $(PY313),$(PY313),python3)
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
BUILD_DIR ?= .aws-sam/build
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: help dev test unit functional e2e iam lint validate build bench clean invoke chromium

help:
	@echo "make dev         run the whole API locally (moto + a ComfyUI stand-in, COMFYUI_STANDINS=2 for a fleet, or COMFYUI_BASE_URL)"
	@echo "make test        lint, every test tier, sam validate and sam build"
	@echo "make unit | functional | e2e | iam   one test tier"
	@echo "make invoke FN=TaskStatusFunction EVENT=events/task_status.json   sam local invoke, without Docker"
	@echo "make lint        cfn-lint and pyflakes"
	@echo "make validate    sam validate --lint"
	@echo "make build       sam build + precompiled .pyc (needs python3.13)"
	@echo "make bench       benchmarks into docs/benchmarks.md"
	@echo "make clean       remove virtualenvs and build output"

$(VENV)/.stamp: requirements-dev.txt layers/comfy_core/requirements.txt functions/docs/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# aws-sam-cli pins its own boto3: it lives in its own virtualenv.
$(SAM_VENV)/.stamp: requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet -r requirements-sam.txt
	touch $@

dev: $(VENV)/.stamp
	$(PY) -m devtools.dev

# The template and the build are checked first, so the last thing `make test` prints is
# the test summary, not sam's banner.
test: lint chromium
	$(MAKE) --no-print-directory validate build
	$(PY) -m pytest tests

unit: $(VENV)/.stamp
	$(PY) -m pytest tests/unit

functional: $(VENV)/.stamp
	$(PY) -m pytest tests/functional

e2e: $(VENV)/.stamp chromium
	$(PY) -m pytest tests/e2e

# Debian's chromium for the Swagger UI browser test (Playwright drives it; it downloads no
# browser). Installed when missing and apt-get can (CI runs as root); elsewhere the test skips,
# except under CI=true, where it fails.
chromium:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "make: no chromium (apt-get install chromium): tests/e2e/test_docs_browser.py will skip" >&2

# sam local invoke without Docker: the function's handler with the template's environment,
# against the running `make dev` stack (its exported AWS_... lines) or a stack of its own.
invoke: $(VENV)/.stamp
	@test -n "$(FN)" || { echo "make invoke: FN=<LogicalId> [EVENT=events/<file>.json]" >&2; exit 2; }
	$(PY) -m devtools.invoke $(FN) $(if $(EVENT),-e $(EVENT))

# Every function's code under its own execution role, in a moto that enforces IAM.
iam: $(VENV)/.stamp
	$(PY) -m pytest tests/iam

lint: $(VENV)/.stamp
	$(VENV)/bin/cfn-lint template.yaml
	$(PY) -m pyflakes layers functions devtools bench tests client

validate: $(SAM_VENV)/.stamp
	$(SAM) validate --lint

# sam build needs python3.13 on PATH for the python3.13 BuildMethod; no Docker needed.
# Then precompile: Lambda's code directories are read-only, so without .pyc files every
# cold start recompiles the layer (~130 ms, see docs/benchmarks.md). unchecked-hash because
# the deployment zip keeps file times only to 2 s, which would make timestamped .pyc stale.
build: $(SAM_VENV)/.stamp
	@test -n "$(PY313)" && "$(PY313)" -c 'import sys; assert sys.version_info[:2] == (3, 13)' \
		|| { echo "make build: needs python3.13 (pyenv 3.13.x, or python3.13 on PATH)" >&2; exit 1; }
	PATH="$(dir $(PY313)):$$PATH" $(SAM) build --build-dir $(BUILD_DIR)
	$(PY313) -m compileall -q -j 0 --invalidation-mode unchecked-hash \
		$(BUILD_DIR)/ComfyCoreLayer/python $(BUILD_DIR)/*Function

bench: $(VENV)/.stamp
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache
