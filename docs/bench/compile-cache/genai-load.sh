#!/usr/bin/env bash
# genai engine load time in a fresh process, alternating vinolm's own cache (which stops
# caching paged-attention pipelines once OpenVINO is seen rejecting their blobs) with a
# user-named CACHE_DIR (OpenVINO's behaviour as it is: read, reject, compile, rewrite).
# Usage: genai-load.sh MODEL_FOLDER [ROUNDS]
set -euo pipefail
model=$1; rounds=${2:-5}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
load() {  # $1: extra ov_config JSON
  VINOLM_HOME=$work/home python - "$model" "$1" <<'PY'
import json, sys, time
from vinolm.engines import EngineOptions, load_engine
from vinolm.models import PreparedModel
model, extra = PreparedModel.open(sys.argv[1]), json.loads(sys.argv[2])
start = time.perf_counter()
engine = load_engine("genai", model, EngineOptions(ov_config=extra))
print(f"{time.perf_counter() - start:.2f} {'CACHE_DIR' in engine.properties}")
PY
}
user="{\"CACHE_DIR\": \"$work/user-cache\"}"
load '{}' >/dev/null; load '{}' >/dev/null; load "$user" >/dev/null  # prime both
for i in $(seq "$rounds"); do
  echo "vinolm-cache $(load '{}')"
  echo "user-cache $(load "$user")"
done
cat "$work/home/ov_cache.json" 2>/dev/null | tr -d '\n '; echo
du -sh "$work/home/ov_cache" "$work/user-cache" 2>/dev/null || true
