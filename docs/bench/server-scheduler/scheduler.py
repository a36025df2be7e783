"""openvino-genai's ContinuousBatchingPipeline as vinolm serve builds it (batching.py), one setting
changed at a time: what its prefill pieces (``max_num_batched_tokens``) and its KV cache
(``cache_size``) trade. Sixteenth session, Intel Xeon with AMX; raw output in ``amx6-*.md``.

    python scheduler.py throughput FOLDER 256,1024,2048 ROUNDS PROMPT_TOKENS   # c=1 and c=8
    python scheduler.py pause FOLDER 256,512,1024,2048 ROUNDS                  # 7 streams, a long prompt arrives
    python scheduler.py rss FOLDER CACHE_GB ROUNDS                             # RSS as distinct prompts arrive
    python scheduler.py retention FOLDER CACHE_GB                              # a conversation after other traffic

``DQ=0`` in the environment turns activation quantization off (what a CPU capped at AVX2 needs).
"""

import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
import openvino_genai as g

FILLER = (Path(__file__).parents[3] / "src/vinolm/bench/grounded.txt").read_text() * 3
PROPS = {"KV_CACHE_PRECISION": "f16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": int(os.environ.get("DQ", "64")),
         "INFERENCE_PRECISION_HINT": "f32"}


def pipeline(path, batched=256, cache_gb=1):
    config = g.SchedulerConfig()
    config.enable_prefix_caching, config.max_num_seqs, config.dynamic_split_fuse = True, 8, True
    config.cache_size, config.max_num_batched_tokens = cache_gb, batched
    return g.ContinuousBatchingPipeline(path, config, "CPU", PROPS)


def prompt(tok, i, n):
    """A prompt of its own (a new lead) cut to ``n`` tokens: no request hits another's prefix."""
    ids = tok.encode(f"Run {i} {np.random.default_rng(i).integers(1e9)}: " + FILLER).input_ids.data[0][:n]
    return ov.Tensor(np.asarray([ids], dtype=np.int64))


def config(new_tokens):
    gc = g.GenerationConfig()
    gc.max_new_tokens, gc.ignore_eos = new_tokens, True
    return gc


def drain(pipe, handles, t0):
    """Step until done: (first-token time per handle, tokens generated)."""
    first, total = {}, 0
    while pipe.has_non_finished_requests():
        pipe.step()
        for k, h in enumerate(handles):
            if h.can_read():
                total += sum(len(o.generated_ids) for o in h.read().values())
                first.setdefault(k, time.perf_counter() - t0)
    return first, total


def throughput(path, settings, rounds, n):
    tok = g.Tokenizer(path)
    pipes = {m: pipeline(path, batched=m) for m in settings}
    res = {}
    for r in range(rounds):
        for m, pipe in pipes.items():
            for conc in (1, 8):
                seed = r * 1000 + conc * 100 + m
                handles = [pipe.add_request(seed + k, prompt(tok, seed + k, n), config(64)) for k in range(conc)]
                t0 = time.perf_counter()
                first, total = drain(pipe, handles, t0)
                res.setdefault((m, conc), []).append((statistics.median(first.values()), max(first.values()),
                                                      total / (time.perf_counter() - t0)))
    for (m, conc), rows in sorted(res.items()):
        print(f"max_num_batched_tokens {m:5d} c={conc}: TTFT median {statistics.median(x[0] for x in rows) * 1e3:7.1f} ms, "
              f"last first token {statistics.median(x[1] for x in rows) * 1e3:7.1f} ms, "
              f"{statistics.median(x[2] for x in rows):6.1f} tok/s")


def pause(path, settings, rounds):
    tok = g.Tokenizer(path)
    pipes = {m: pipeline(path, batched=m) for m in settings}
    res = {}
    for r in range(rounds):
        for m, pipe in pipes.items():
            seed = r * 1000 + m
            handles = [pipe.add_request(seed + k, prompt(tok, seed + k, 128), config(200)) for k in range(7)]
            last, pauses, steps, late, added, ttft = {}, [], 0, None, 0.0, None
            while pipe.has_non_finished_requests():
                pipe.step()
                steps += 1
                now = time.perf_counter()
                for k, h in enumerate(handles):
                    if h.can_read():
                        h.read()
                        if k in last and late is not None:
                            pauses.append(now - last[k])
                        last[k] = now
                if late is not None and ttft is None and late.can_read():
                    late.read()
                    ttft = now - added
                if steps == 20:  # the 7 streams are decoding: a 990-token prompt arrives
                    late, added = pipe.add_request(seed + 99, prompt(tok, seed + 99, 990), config(8)), now
            res.setdefault(m, []).append((max(pauses), statistics.quantiles(pauses, n=100)[98], ttft))
    for m, rows in res.items():
        print(f"max_num_batched_tokens {m:5d}: longest pause of a decoding stream "
              f"{statistics.median(x[0] for x in rows) * 1e3:6.1f} ms, p99 {statistics.median(x[1] for x in rows) * 1e3:6.1f} ms, "
              f"the long prompt's TTFT {statistics.median(x[2] for x in rows) * 1e3:6.1f} ms")


def rss_mb():
    return next(int(line.split()[1]) // 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))


def rss(path, cache_gb, rounds):
    tok = g.Tokenizer(path)
    pipe = pipeline(path, cache_gb=cache_gb)
    print(f"cache_size {cache_gb}: loaded, RSS {rss_mb()} MB")
    rates = []
    for r in range(rounds):
        handles = [pipe.add_request(r * 100 + k, prompt(tok, r * 100 + k, 990), config(128)) for k in range(8)]
        t0 = time.perf_counter()
        _, total = drain(pipe, handles, t0)
        rates.append(total / (time.perf_counter() - t0))
        print(f"  round {r}: 8 prompts of 990 tokens, {rates[-1]:.1f} tok/s, RSS {rss_mb()} MB, "
              f"cache usage {pipe.get_metrics().cache_usage:.1f}%")
    print(f"  median {statistics.median(rates):.1f} tok/s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


def retention(path, cache_gb):
    tok = g.Tokenizer(path)
    pipe = pipeline(path, cache_gb=cache_gb)
    ids = iter(range(10**6))

    def ttft(prompts):
        handles = [pipe.add_request(next(ids), ov.Tensor(np.asarray([p], dtype=np.int64)), config(16)) for p in prompts]
        first, _ = drain(pipe, handles, time.perf_counter())
        return min(first.values()) * 1e3

    def tokens(i, n):
        return list(prompt(tok, i, n).data[0])

    history = tokens(1, 990)
    print(f"cache_size {cache_gb}: the conversation's first turn {ttft([history]):.0f} ms, "
          f"its next turn at once {ttft([history + tokens(2, 40)]):.0f} ms")
    for others in (8, 32, 64):
        for k in range(others // 8):
            ttft([tokens(1000 + others * 10 + k * 8 + j, 990) for j in range(8)])
        print(f"  its next turn after {others} other 990-token prompts: {ttft([history + tokens(3 + others, 40)]):.0f} ms")


if __name__ == "__main__":
    what, folder = sys.argv[1], sys.argv[2]
    if what in ("throughput", "pause"):
        values = [int(x) for x in sys.argv[3].split(",")]
        throughput(folder, values, int(sys.argv[4]), int(sys.argv[5])) if what == "throughput" else \
            pause(folder, values, int(sys.argv[4]))
    elif what == "rss":
        rss(folder, int(sys.argv[3]), int(sys.argv[4]))
    else:
        retention(folder, int(sys.argv[3]))
