# wxbot — `make run` starts the whole system, `make test` runs every test.
# Needs only Python 3.11 and pip: everything else is installed into .venv.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PROTO_OUT := libs/wxbot-proto/src
PACKAGES := libs/wxbot-proto libs/wxbot-common libs/wxbot-wecom libs/wxbot-devkit libs/wxbot-skill \
            services/gateway services/safety services/nlp services/context services/skills \
            'services/analytics[embedded]' services/console
PROTOS := $(shell find proto -name '*.proto')
PYSRC  := libs/wxbot-common/src libs/wxbot-common/tests libs/wxbot-wecom/src libs/wxbot-devkit/src libs/wxbot-skill/src libs/wxbot-skill/tests services/*/src tests bench examples

.PHONY: all install proto run demo test lint typecheck check bench bench-analytics profile chaos soak clean manifests

all: install

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(VENV)/bin/python constraints.txt requirements-dev.txt $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	$(PIP) install -q -c constraints.txt setuptools -r requirements-dev.txt
	$(MAKE) proto
	$(PIP) install -q -c constraints.txt --no-build-isolation $(addprefix -e ,$(PACKAGES))
	touch $(STAMP)

install: $(STAMP)

# Generated code is never committed: protoc + mypy-protobuf write typed modules into wxbot-proto.
proto: $(VENV)/bin/python
	@rm -rf $(PROTO_OUT)/wxbot_proto && mkdir -p $(PROTO_OUT)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I proto --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
	  --mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) $(PROTOS)
	@find $(PROTO_OUT)/wxbot_proto -type d -exec sh -c 'touch "$$0/__init__.py"' {} \;
	@touch $(PROTO_OUT)/wxbot_proto/py.typed

$(PROTO_OUT)/wxbot_proto/py.typed: $(PROTOS)
	$(MAKE) proto

run: install $(PROTO_OUT)/wxbot_proto/py.typed
	$(VENV)/bin/wxbot-stack

# The same, with a fake WeCom API and a fake LLM on loopback: try the bot without any account.
demo: install $(PROTO_OUT)/wxbot_proto/py.typed
	$(VENV)/bin/wxbot-stack --with-fakes

test: install $(PROTO_OUT)/wxbot_proto/py.typed
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check $(PYSRC)
	$(VENV)/bin/ruff format --check $(PYSRC)

typecheck: install $(PROTO_OUT)/wxbot_proto/py.typed
	$(VENV)/bin/mypy $(PYSRC)

check: lint typecheck test

# The kubectl manifests (deploy/k8s/<dev|prod>/wxbot.yaml) rendered from the Helm chart; a test checks they agree.
manifests: install
	$(PY) -m wxbot_devkit.manifests

# The benchmark: each scenario starts a fresh stack, prints its report and writes it as JSON
# (BENCH_OUT/<scenario>.json); BENCH_ARGS adds knobs, e.g. BENCH_ARGS="--replicas nlp=2". See docs/performance.md.
BENCH_SCENARIOS ?= burst fast steady
BENCH_OUT ?= .run/bench
BENCH_ARGS ?=
bench: install $(PROTO_OUT)/wxbot_proto/py.typed
	@set -e; for s in $(BENCH_SCENARIOS); do \
	  $(PY) -m bench --scenario $$s --json $(BENCH_OUT)/$$s.json $(BENCH_ARGS); echo; \
	done

# The analytics projection at 2,000 events/s and after a burst, and the reports over a million
# events (docs/analytics.md). BENCH_ANALYTICS_ARGS adds knobs, e.g. "--rate 4000 --events 200000".
BENCH_ANALYTICS_ARGS ?=
bench-analytics: install $(PROTO_OUT)/wxbot_proto/py.typed
	$(PY) -m bench.analytics --json $(BENCH_OUT)/analytics.json $(BENCH_ANALYTICS_ARGS)

# One scenario with a py-spy profile of every service process (speedscope files + top functions).
PROFILE_SCENARIO ?= burst
PROFILE_DIR ?= .run/profile
profile: install $(PROTO_OUT)/wxbot_proto/py.typed
	$(PY) -m bench --scenario $(PROFILE_SCENARIO) --profile $(PROFILE_DIR) --json $(PROFILE_DIR)/report.json $(BENCH_ARGS)

# Faults one after another under a steady load on a supervised stack with two replicas of every
# service (SIGKILL of a replica of each service, of nats-server and redis-server, WeCom refusing
# connections for 30 s, an LLM 429 storm); per fault: lost, duplicated, out of order, worst latency,
# time to recover. ~10 minutes; not in CI (a short version is in `make test`). See docs/reliability.md.
CHAOS_OUT ?= .run/chaos
CHAOS_ARGS ?=
chaos: install $(PROTO_OUT)/wxbot_proto/py.typed
	$(PY) -m bench.chaos --json $(CHAOS_OUT)/chaos.json $(CHAOS_ARGS)

# 30 minutes at 20 messages/s: RSS growth after warm-up, open fds, consumer lag, lost/duplicated.
# Shorter: make soak SOAK_ARGS="--duration 300". Not in CI. See docs/reliability.md.
SOAK_OUT ?= .run/soak
SOAK_ARGS ?=
soak: install $(PROTO_OUT)/wxbot_proto/py.typed
	$(PY) -m bench.soak --json $(SOAK_OUT)/soak.json $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .run $(PROTO_OUT)/wxbot_proto
