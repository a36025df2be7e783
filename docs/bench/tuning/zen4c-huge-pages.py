"""In-process A/B of weight page sizes: rows are pipelines of one model."""
import ctypes, os, sys, time, numpy as np, openvino_genai as og
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25
HUGE = 2 << 20

def regions():
    out = {}
    for line in open("/proc/self/maps"):
        p = line.split()
        a, b = (int(x, 16) for x in p[0].split("-"))
        out[(a, b)] = (p[1], p[5] if len(p) > 5 else "")
    return out

def collapse(new, want_file=None):
    done = err = 0
    for (a, b), (perm, name) in new.items():
        if want_file is None and name != "":
            continue
        if want_file is not None and name != want_file:
            continue
        lo = (a + HUGE - 1) & ~(HUGE - 1); hi = b & ~(HUGE - 1)
        if hi - lo < HUGE:
            continue
        libc.madvise(lo, hi - lo, MADV_HUGEPAGE)
        r = libc.madvise(lo, hi - lo, MADV_COLLAPSE)
        if r == 0: done += hi - lo
        else: err += 1; e = ctypes.get_errno()
    print(f"collapsed {done >> 20} MB, {err} regions failed" + (f" (errno {e})" if err else ""), flush=True)

path = sys.argv[1]; dq = int(sys.argv[2]); rows = sys.argv[3].split(",")
base = {"KV_CACHE_PRECISION": "f16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": dq}
g = og.GenerationConfig(); g.max_new_tokens = 64; g.min_new_tokens = 64
prompt = "The history of the river " * 50
pipes = {}
for row in rows:
    before = regions()
    cfg = dict(base)
    if row.startswith("nommap"):
        cfg["ENABLE_MMAP"] = False
    p = og.LLMPipeline(path, "CPU", **cfg)
    p.generate(prompt, g)
    new = {k: v for k, v in regions().items() if k not in before}
    if row == "nommap-huge":
        collapse(new)
    if row == "mmap-huge":
        collapse(new)
        collapse({k: v for k, v in regions().items() if v[1].endswith("openvino_model.bin")}, want_file=os.path.join(path, "openvino_model.bin"))
    pipes[row] = p
tp = {r: [] for r in rows}
for rnd in range(int(os.environ.get("ROUNDS", 8))):
    for r in rows:
        res = pipes[r].generate([prompt], g)
        tp[r].append(res.perf_metrics.get_tpot().mean)
ref = np.median(tp[rows[0]])
for r in rows:
    ratios = np.array(tp[r]) / np.array(tp[rows[0]])
    print(f"{r:14s} tok/s {1000/np.median(tp[r]):6.2f}  time/token vs first {np.median(ratios):.3f} (min {ratios.min():.3f} max {ratios.max():.3f})")
for l in open("/proc/self/smaps_rollup"):
    if "Huge" in l or "PmdMapped" in l: print(l.strip())
