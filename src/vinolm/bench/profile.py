"""Where a decode step's time goes: OpenVINO's per-node counters for one model.

    python -m vinolm.bench.profile [--model M] [--weight-format int8] [--prompt-tokens 256] \\
        [--steps 32] [--step-tokens 1] [--batch 1] [--paged] [--ov-config KEY=VALUE ...] [--json]

Compiles the stateful IR with ``PERF_COUNT`` (vinolm's default properties, then the
overrides), prefills a prompt, then runs single-token steps and sums each node type's time
over them, with the kernels OpenVINO chose. ``FullyConnected`` is the weight matmuls (with
vinolm's q4_1 kernel, its operations, which OpenVINO runs as ``Reference`` nodes): their
share of a step, and the weight bytes it streams per step over its time (achieved GB/s),
say whether decoding is bound by the weight kernel or by everything around it; the matmul
table splits that per weight matrix, in weights per second as well as bytes, because a kernel
that moves INT4 and INT8 at the same weights per second is bound by its arithmetic (unpacking
and f32 FMAs), not by memory, and 4 bits then buy nothing. genai's
pipeline runs the same matmul kernels over paged attention, so the weight rows carry over;
the attention rows are the stateful model's. ``--step-tokens k+1`` times the pass in
which speculative decoding checks k proposed tokens instead of a single step, and compares
that pass's logits, row by row, with k+1 single steps over the same tokens: speculative
decoding answers as plain decoding only where they agree (bit for bit, or too closely to
flip a token). It also times what surrounds a pass in the native engine's prompt lookup
(``miss_cost``): rejecting a wrong guess by masking it or by cutting it out of the state,
and the token step after the pass, which OpenVINO's plugin slows, cut or not, by preparing
every node again for the input shape going back from k+1 tokens to one. ``--batch B`` decodes
B sequences a step, as a server does at concurrency B: whether the weight kernel's time grows
with the rows it multiplies (compute-bound) or stays (memory-bound). ``--paged`` profiles
the model as openvino-genai's pipelines run it, its attention paged: their token step, and
the pass that checks genai's own prompt lookup proposals, which runs another attention kernel
than a step and so answers as plain decoding only where the parity line says so. Its node
times do not add up to genai's prompt: a 988-token ``--paged`` pass took 3.1 s here where genai
prefilled the same length in 1.75 s (docs/benchmarks.md, section 35), so a prompt's split is
sampled from the pipeline itself (``perf``), not read from these counters.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from vinolm.bench.report import run_tool
from vinolm.bench.schema import check_context
from vinolm.errors import EngineError
from vinolm.export import WEIGHT_FORMATS
from vinolm.export.blocks import BODY_BLOCKS, GROUP_BYTES, blob_matrix
from vinolm.kernels import add_to_cores, extensions_for, folder_extensions

#: Node types that stream the weights (``FullyConnectedCompressed`` where OpenVINO
#: decompresses INT8/INT4 inside the kernel).
WEIGHT_NODES = ("FullyConnected",)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import openvino as ov

    from vinolm.engines.ovconfig import compile_properties, parse_ov_config
    from vinolm.export import folder_weight_bytes
    from vinolm.models import prepare

    model = prepare(args.model, args.weight_format, progress=lambda _: None)
    capacity = args.prompt_tokens + args.steps * args.step_tokens
    check_context(model, capacity, "--prompt-tokens and --steps x --step-tokens")
    props = {**compile_properties("CPU", parse_ov_config(args.ov_config), None, export=model.weights), "PERF_COUNT": True}
    core = ov.Core()
    add_to_cores([core], extensions_for(model.info))
    xml = model.path / "openvino_model.xml"
    if args.paged:
        compiled = core.compile_model(paged_model(core, xml), "CPU", props)
        request = compiled.create_infer_request()
        logits = paged_feed(compiled, request, capacity)
    else:
        compiled = core.compile_model(xml, "CPU", props)
        request = compiled.create_infer_request()

        def logits(tokens: list[int], start: int) -> Any:
            rows = args.batch
            ids = np.array([tokens] * rows, dtype=np.int64)
            request.infer({"input_ids": ids, "attention_mask": np.ones((rows, start + len(tokens)), dtype=np.int64),
                           "position_ids": np.tile(np.arange(start, start + len(tokens)), (rows, 1)),
                           "beam_idx": np.arange(rows, dtype=np.int32)})  # fmt: skip
            return request.get_tensor("logits").data[0]  # a view until the next inference

    def step(tokens: list[int], start: int) -> int:
        return int(logits(tokens, start)[-1].argmax())

    def executed() -> dict[str, Any]:
        return {i.node_name: i for i in request.profiling_info if i.status == ov.ProfilingInfo.Status.EXECUTED}

    prompt = [100 + i % 1000 for i in range(args.prompt_tokens)]  # timing does not depend on which tokens
    request.reset_state()
    token = step(prompt, 0)
    after_prefill = {name: i.real_time.total_seconds() for name, i in executed().items()}
    started = time.perf_counter()
    for i in range(args.steps):  # a pass of --step-tokens tokens is what speculative decoding checks
        token = step([token] * args.step_tokens, args.prompt_tokens + i * args.step_tokens)
    wall = time.perf_counter() - started
    # The CPU plugin reports each node's mean time over every inference of the request so far
    # (the prefill included): the steps' total is the difference of the running sums.
    seconds: dict[str, float] = defaultdict(float)
    kernels: dict[str, Counter[str]] = defaultdict(Counter)
    per_node: dict[str, float] = {}
    for name, info in executed().items():
        per_node[name] = info.real_time.total_seconds() * (1 + args.steps) - after_prefill.get(name, 0.0)
        seconds[info.node_type] += per_node[name]
        kernels[info.node_type][info.exec_type] += 1
    counted = sum(seconds.values())
    parity = None
    if args.step_tokens > 1:  # the checking pass against single steps over the same tokens
        tokens = [200 + i for i in range(args.step_tokens)]
        request.reset_state()
        step(prompt, 0)
        singles = np.stack([logits([t], args.prompt_tokens + i)[-1].copy() for i, t in enumerate(tokens)])
        request.reset_state()
        step(prompt, 0)
        checked = logits(tokens, args.prompt_tokens)[-args.step_tokens:].copy()
        diff = np.abs(checked.astype(np.float64) - singles).max(axis=1)
        parity = {"max_abs_diff": [float(d) for d in diff], "bitwise": bool((checked == singles).all()),
                  "argmax_same": bool((checked.argmax(axis=1) == singles.argmax(axis=1)).all())}
    miss = miss_cost(model.path, props, prompt, args.step_tokens, args.steps) if args.step_tokens > 1 and not args.paged else None
    weights = folder_weight_bytes(model.path)
    matrices = weight_matrices(compiled, kernel_blobs(xml))
    weight_s = sum(per_node.get(name, 0.0) for name in matrices) / args.steps
    rows = [{"node_type": node, "ms_per_step": round(s / args.steps * 1000, 3), "share": round(s / counted, 4),
             "nodes": sum(kernels[node].values()), "kernels": dict(kernels[node].most_common(3))}
            for node, s in sorted(seconds.items(), key=lambda kv: -kv[1])]  # fmt: skip
    return {"model": str(model.path), "properties": {k: str(v) for k, v in props.items()},
            "prompt_tokens": args.prompt_tokens, "steps": args.steps, "step_tokens": args.step_tokens,
            "batch": args.batch, "paged": args.paged,
            "step_ms": round(wall / args.steps * 1000, 3), "counted_ms": round(counted / args.steps * 1000, 3),
            "weight_mb": round(weights / 1e6, 1), "weight_gbps": round(weights / weight_s / 1e9, 1) if weight_s else None,
            "parity": parity, "miss": miss, "rows": rows,
            "matmuls": matmul_rows(matrices, per_node, args.steps)}  # fmt: skip


def paged_model(core: Any, xml: Any) -> Any:
    """The model as openvino-genai's pipelines compile it: its attention rewritten to read
    and write a paged KV cache through block tables (openvino's own transformation)."""
    from openvino._offline_transformations import paged_attention_transformation

    model = core.read_model(xml)
    paged_attention_transformation(model, False, False)
    return model


#: The paged model's inputs besides the caches, as one sequence fills them.
PAGED_INPUTS = frozenset({"input_ids", "position_ids", "past_lens", "subsequence_begins", "block_indices",
                          "block_indices_begins", "max_context_len"})


def paged_feed(compiled: Any, request: Any, capacity: int) -> Callable[[list[int], int], Any]:
    """``logits(tokens, start)`` for one sequence in the paged model: its caches hold
    ``capacity`` tokens in consecutive blocks, and writing at ``start`` again overwrites
    what a previous call left there (the stateful model's ``reset_state``)."""
    import numpy as np
    import openvino as ov

    names = {i.get_any_name() for i in compiled.inputs}
    unknown = {n for n in names - PAGED_INPUTS if not n.startswith(("key_cache.", "value_cache."))}
    if unknown:
        raise EngineError(f"--paged: this OpenVINO's paged model wants inputs this tool does not fill: {sorted(unknown)}")
    caches = [(p.get_any_name(), p.get_element_type(), [d.get_length() for d in list(p.get_partial_shape())[1:]])
              for p in compiled.inputs if p.get_any_name().startswith(("key_cache.", "value_cache."))]
    block = next(dims[1] for name, _, dims in caches if name.startswith("value_cache."))  # [heads, block, size]
    for name, kind, dims in caches:
        request.set_tensor(name, ov.Tensor(kind, [-(-capacity // block), *dims]))

    def logits(tokens: list[int], start: int) -> Any:
        end = start + len(tokens)
        used = -(-end // block)
        request.infer({"input_ids": np.array(tokens, dtype=np.int64), "position_ids": np.arange(start, end),
                       "past_lens": np.array([start], np.int32), "subsequence_begins": np.array([0, len(tokens)], np.int32),
                       "block_indices": np.arange(used, dtype=np.int32),
                       "block_indices_begins": np.array([0, used], np.int32), "max_context_len": np.array(end, np.int32)})
        out = request.get_tensor("logits").data
        return out.reshape(-1, out.shape[-1])

    return logits


def kernel_blobs(xml: Path) -> dict[str, tuple[str, list[tuple[int, ...]]]]:
    """vinolm's kernel operations in the IR (friendly name -> type and the shapes of its u8
    blobs), read from the XML: the compiled graph names them only ``Reference``, and a Q4MLP's
    blobs are its body's constants, which OpenVINO's Python API does not show."""
    root = ElementTree.parse(xml).getroot()
    layers = [layer for layer in root.iterfind("layers/layer") if layer.get("type") in GROUP_BYTES]
    inputs = _fed(root, {layer.get("name") for layer in layers})
    kernels = {}
    for layer in layers:
        body, roles = layer.find("body"), BODY_BLOCKS.get(layer.get("type"), ())
        blocks = _fed(body, set(roles)) if body is not None else {}
        shapes = [s for name in roles for s in blocks.get(name, [])] if body is not None else inputs[layer.get("name")]
        kernels[layer.get("name")] = (layer.get("type"), shapes)
    return kernels


def _fed(graph: Any, names: set[str]) -> dict[str, list[tuple[int, ...]]]:
    """The shapes of the constants that feed the layers ``names`` of ``graph`` (an IR or a
    body) other than at port 0, a kernel's activations: its weights."""
    layers = {layer.get("id"): layer for layer in graph.iterfind("layers/layer")}
    fed: dict[str, list[tuple[int, ...]]] = defaultdict(list)
    for edge in graph.iterfind("edges/edge"):
        source, target = layers[edge.get("from-layer")], layers[edge.get("to-layer")]
        if target.get("name") in names and source.get("type") == "Const" and (
                target.get("type") == "Result" or edge.get("to-port") != "0"):
            fed[target.get("name")].append(_shape(source))
    return fed


def _shape(const: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in const.find("data").get("shape").split(","))


def weight_matrices(compiled: Any, kernels: dict[str, tuple[str, list[tuple[int, ...]]]]) -> dict[str, tuple[str, int, int]]:
    """Each weight matmul of the compiled graph: node name -> (its matrix as ``NxK type``,
    weights, bytes of the weights with their scales and zero points); ``kernels`` are the
    q4_1 kernel's (``kernel_blobs``), whose blobs hold NxK matrices in blocks."""
    matrices = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        name = op.get_friendly_name()
        if name in kernels:
            kind, shapes = kernels[name]
            dims = [blob_matrix(kind, s) for s in shapes]
            matrices[name] = (" + ".join(f"{n}x{k}" for n, k in dims) + f" {kind}", sum(n * k for n, k in dims),
                              sum(math.prod(s) for s in shapes))
            continue
        if not op.get_rt_info()["layerType"].astype(str).startswith(WEIGHT_NODES):
            continue
        constants = [(i.get_shape(), i.get_element_type()) for i in op.inputs()[1:] if i.get_partial_shape().is_static]
        constants = [(shape, kind) for shape, kind in constants if math.prod(shape)]  # not the empty placeholders
        if not constants:  # weights computed at run time: nothing to count
            continue
        shape, kind = constants[0]
        size = sum(math.prod(s) * k.bitwidth // 8 for s, k in constants)
        matrices[name] = (f"{'x'.join(map(str, shape))} {kind.get_type_name()}", math.prod(shape), size)
    return matrices


def matmul_rows(matrices: dict[str, tuple[str, int, int]], seconds: dict[str, float], steps: int) -> list[dict[str, Any]]:
    """The same matmul of every layer as one row (layer numbers dropped), slowest first."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, (matrix, _, _) in matrices.items():
        if name in seconds:
            label = re.sub(r"^__module\.(model\.)?", "", name.split("/")[0])  # optimum's prefix
            groups[re.sub(r"\.\d+\.", ".N.", label), matrix].append(name)
    rows = []
    for (label, matrix), names in groups.items():
        spent = sum(seconds[n] for n in names)
        weights, size = matrices[names[0]][1], matrices[names[0]][2]
        rows.append({"matmul": label, "matrix": matrix, "nodes": len(names),
                     "us_per_call": round(spent / steps / len(names) * 1e6, 1),
                     "gweights_per_s": round(weights * len(names) * steps / spent / 1e9, 1) if spent else None,
                     "gbps": round(size * len(names) * steps / spent / 1e9, 1) if spent else None})  # fmt: skip
    return sorted(rows, key=lambda r: -r["us_per_call"] * r["nodes"])


def miss_cost(folder: Any, props: dict[str, Any], prompt: list[int], tokens: int, reps: int) -> dict[str, float]:
    """Median ms of what surrounds a checking pass of ``tokens`` tokens in the native
    engine's prompt lookup (``StatefulLM`` with its KV mirror): a token step, the pass after
    a step and after a pass, the step after a pass whose tokens were all kept, masked out
    (``reject`` without ``cut_rejections``) or cut out of a state that holds no masked
    guesses (``trim``, as ``cut_rejections`` does), and the cut itself. The kept case is
    the control: what the plugin charges for the input shape changing back to one token."""
    import statistics

    import numpy as np
    import openvino as ov

    from vinolm.engines.native_model import StatefulLM

    plain = {k: v for k, v in props.items() if k != "PERF_COUNT"}
    core = ov.Core()
    add_to_cores([core], folder_extensions(folder))
    lm = StatefulLM(core, folder / "openvino_model.xml", "CPU", plain, len(prompt) + 16 * tokens * reps, mirror=True)
    lm.prefill(prompt)
    times: dict[str, list[float]] = defaultdict(list)
    guesses = [300] * tokens

    def timed(name: str, call: Any) -> None:
        started = time.perf_counter()
        call()
        times[name].append((time.perf_counter() - started) * 1000)

    def step() -> None:
        lm.decode_step(np.array([300]))

    for _ in range(reps):
        timed("step_ms", step)
        timed("pass_ms", lambda: lm.check(guesses))
        timed("step_after_kept_ms", step)
        lm.check(guesses)
        timed("cut_ms", lambda: lm.trim(lm.length - (tokens - 1)))  # a clean state: what cut_rejections pays
        timed("step_after_cut_ms", step)
        lm.check(guesses)
        timed("reject_ms", lambda: lm.reject(tokens - 1))
        timed("step_after_masked_ms", step)
        lm.trim(lm.length)  # the masked guesses compacted away, untimed
        lm.check(guesses)
        timed("pass_after_pass_ms", lambda: lm.check(guesses))
        step()
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def markdown(result: dict[str, Any]) -> str:
    rows = f" of {result['batch']} sequences" if result.get("batch", 1) > 1 else ""
    rows += " (paged attention, as openvino-genai runs the model)" if result.get("paged") else ""
    lines = [(f"Decode step{rows}: {result['step_ms']} ms on the caller's clock, {result['counted_ms']} ms in nodes; "
             f"weights {result['weight_mb']} MB streamed by the weight matmuls at {result['weight_gbps']} GB/s."), "",
             "| node type | ms per step | share of node time | kernels (nodes per step) |",
             "|---|---:|---:|---|"]  # fmt: skip
    for r in result["rows"]:
        kernels = ", ".join(f"`{k}` {n}" for k, n in r["kernels"].items())
        lines.append(f"| {r['node_type']} | {r['ms_per_step']:.3f} | {r['share']:.1%} | {kernels} |")
    lines += ["", "| weight matmul (every layer's) | matrix | nodes per step | µs per call | G weights/s | GB/s |",
              "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {m['matmul']} | {m['matrix']} | {m['nodes']} | {m['us_per_call']} | {m['gweights_per_s']} | {m['gbps']} |"
              for m in result["matmuls"]]
    if (parity := result.get("parity")) is not None:
        diffs = ", ".join(f"{d:.2g}" for d in parity["max_abs_diff"])
        verdict = "bit for bit" if parity["bitwise"] else ("same tokens" if parity["argmax_same"] else "tokens differ")
        lines += ["", (f"A {result['step_tokens']}-token pass against as many single steps, max |logit "
                       f"difference| per row: {diffs} ({verdict}).")]
    if (miss := result.get("miss")) is not None:
        k = result["step_tokens"] - 1
        lines += ["", f"Around a checking pass (native prompt lookup, {k} guessed tokens; medians, ms):", "",
                  ("| token step | pass after a step | pass after a pass | step after a pass, all kept "
                   "| rejecting (masking) | step after, masked | cutting | step after, cut |"),
                  "|---:|---:|---:|---:|---:|---:|---:|---:|",
                  "| " + " | ".join(str(miss[name]) for name in (
                      "step_ms", "pass_ms", "pass_after_pass_ms", "step_after_kept_ms", "reject_ms",
                      "step_after_masked_ms", "cut_ms", "step_after_cut_ms")) + " |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vinolm.bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--weight-format", choices=WEIGHT_FORMATS, default="int8")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--step-tokens", type=int, default=1,
                   help="tokens per step: 1 is decoding, k+1 the pass that checks k speculated tokens")
    p.add_argument("--batch", type=int, default=1,
                   help="sequences decoded together each step, as a server at that concurrency")
    p.add_argument("--paged", action="store_true",
                   help="the model as openvino-genai runs it (paged attention) instead of the native engine's")
    p.add_argument("--ov-config", action="append", default=[], metavar="KEY=VALUE")
    return run_tool(p, argv, _problem, measure, markdown)


def _problem(args: argparse.Namespace) -> str | None:
    if min(args.prompt_tokens, args.steps, args.step_tokens, args.batch) < 1:
        return "--prompt-tokens, --steps, --step-tokens and --batch must be >= 1"
    if args.batch > 1 and args.step_tokens > 1:
        return "--batch times decode steps; a checking pass (--step-tokens > 1) is one sequence's"
    if args.batch > 1 and args.paged:
        return "--paged times one sequence; --batch is the stateful model's"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
