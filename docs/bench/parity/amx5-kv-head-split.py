"""Throwaway probe (fifteenth session, Intel Xeon with AMX, 2 threads, vinolm's defaults): which rows of
OpenVINO's single-token attention add a KV head's keys in two threads' parts, and what it would take
to stop it on the default model (3 KV heads).

  python amx5-kv-head-split.py rows          # 3 identical rows: which rows' passes equal their steps
  python amx5-kv-head-split.py exact fold|pad  # a pass of 11 vs 11 steps, 17 lengths, transformed IR
  python amx5-kv-head-split.py time fold|pad 700  # token step and passes, untouched vs transformed

``fold``: each KV head becomes a batch row ([B,3,L,S] -> [B*3,1,L,S], queries [B*3,3,q,S]);
``pad``: a fourth KV head of zeros (and three query heads of zeros), sliced off after attention.
Both keep OpenVINO's stateful SDPA fusion (checked on the runtime model)."""
import sys, time
import numpy as np, openvino as ov
from openvino import opset13 as op

def _chain_to_concat(node):
    """SDPA K/V input -> (reshape, broadcast, unsqueeze, concat) of the GQA expansion, or concat."""
    chain = []
    while node.get_type_name() != "Concat":
        chain.append(node)
        node = node.input_value(0).get_node()
    return chain, node

def fold_kv_heads(model, pad=0):
    sdpas = [o for o in model.get_ordered_ops() if o.get_type_name() == "ScaledDotProductAttention"]
    beam = next(p for p in model.get_parameters() if p.get_output_tensor(0).get_any_name() == "beam_idx")
    ids = next(p for p in model.get_parameters() if p.get_output_tensor(0).get_any_name() == "input_ids")
    sinks = {s.get_variable_id(): s for s in model.get_sinks()}
    old_vars = []
    new_sinks = []
    cache = {}
    for sdpa in sdpas:
        q = sdpa.input_value(0)
        hq = q.get_partial_shape()[1].get_length()
        hkv = None
        for port in (1, 2):
            chain, concat = _chain_to_concat(sdpa.input_value(port).get_node())
            gather = concat.input_value(0).get_node()
            rv = gather.input_value(0).get_node()
            shape = rv.get_output_partial_shape(0)
            hkv = shape[1].get_length(); S = shape[3].get_length()
            et = rv.get_output_element_type(0)
            if "beam" not in cache:
                b = op.gather(op.shape_of(ids), [0], 0)
                if pad:
                    cache["beam"] = beam
                    cache["init_shape"] = op.concat([b, op.constant(np.array([hkv + pad, 0, S], dtype=np.int64))], 0)
                else:
                    cache["beam"] = op.reshape(op.add(op.unsqueeze(op.multiply(beam, np.int32(hkv)), 1),
                                                  np.arange(hkv, dtype=np.int32)), [-1], False)
                    cache["init_shape"] = op.concat([op.multiply(b, np.int64(hkv)), op.constant(np.array([1, 0, S], dtype=np.int64))], 0)
            vid = rv.get_variable_id()
            info = ov.op.util.VariableInfo()
            info.data_shape = ov.PartialShape([-1, hkv + pad, -1, S] if pad else [-1, 1, -1, S]); info.data_type = et; info.variable_id = vid
            var = ov.op.util.Variable(info)
            init = op.broadcast(op.constant(np.array(0, dtype=np.float32)).output(0) if et == ov.Type.f32 else op.constant(0, et), cache["init_shape"])
            new_rv = op.read_value(init, var)
            new_gather = op.gather(new_rv, cache["beam"], np.int64(0))
            if pad:
                cur = concat.input_value(1)
                zeros = op.multiply(op.slice(cur, np.array([0]), np.array([pad]), np.array([1]), np.array([1])), op.constant(0, et))
                new_in = op.concat([cur, zeros], 1)
            else:
                new_in = op.reshape(concat.input_value(1), np.array([-1, 1, 0, S], dtype=np.int64), True)
            new_concat = op.concat([new_gather, new_in], 2)
            new_assign = op.assign(new_concat, var)
            old_vars.append((rv, sinks[vid], var))
            for old, new, keep in ((concat, new_concat, chain[-1:]), (gather, new_rv, [concat]), (rv, new_rv, [gather])):
                for t in list(old.output(0).get_target_inputs()):
                    n = t.get_node()
                    if n.get_type_name() == "Assign" or any(n is k for k in keep):
                        continue
                    assert n.get_type_name() == "ShapeOf", n.get_type_name()
                    et_out = n.get_output_element_type(0)
                    sh = op.shape_of(new, et_out.get_type_name() if hasattr(et_out, 'get_type_name') else str(et_out))
                    unfolded = op.concat([op.divide(op.gather(sh, [0], 0), op.constant(np.array([1 if pad else hkv]), et_out)),
                                          op.constant(np.array([hkv]), et_out), op.gather(sh, [2, 3], 0)], 0)
                    for tt in list(n.output(0).get_target_inputs()):
                        tt.replace_source_output(unfolded.output(0))
            new_sinks.append(new_assign)
            # GQA expansion for one KV head per row
            exp = op.broadcast(op.unsqueeze(new_concat, 2),
                               op.constant(np.array([1, 1, hq // hkv, 1, 1], dtype=np.int64)), broadcast_spec="BIDIRECTIONAL")
            flat = op.reshape(exp, np.array([0, (hkv + pad) * (hq // hkv), -1, S] if pad else [0, hq // hkv, -1, S], dtype=np.int64), True)
            sdpa.input(port).replace_source_output(flat.output(0))
        S = q.get_partial_shape()[3].get_length()
        if pad:
            qz = op.multiply(op.slice(q, np.array([0]), np.array([pad * (hq // hkv)]), np.array([1]), np.array([1])), op.constant(0, q.get_element_type()))
            new_q = op.concat([q, qz], 1)
        else:
            new_q = op.reshape(q, np.array([-1, hq // hkv, 0, S], dtype=np.int64), True)
        sdpa.input(0).replace_source_output(new_q.output(0))
        if sdpa.get_input_size() > 3 and not pad:
            mask = sdpa.input_value(3)
            key = mask.get_node().get_friendly_name() + str(mask.get_index())
            if key not in cache:
                tiled = op.tile(mask, np.array([1, hkv, 1, 1], dtype=np.int64))
                cache[key] = op.reshape(tiled, np.array([-1, 1, 0, 0], dtype=np.int64), True)
            sdpa.input(3).replace_source_output(cache[key].output(0))
        out_targets = list(sdpa.output(0).get_target_inputs())
        back = (op.slice(sdpa.output(0), np.array([0]), np.array([hq]), np.array([1]), np.array([1])) if pad else
                op.reshape(sdpa.output(0), np.array([-1, hq, 0, S], dtype=np.int64), True))
        for t in out_targets:
            t.replace_source_output(back.output(0))
    byid = {v.get_info().variable_id: v for v in model.get_variables()}
    for rv, sink, var in old_vars:
        model.remove_sink(sink)
        model.remove_variable(byid[rv.get_variable_id()])
    model.add_sinks(new_sinks)
    model.add_variables([v for _, _, v in old_vars])
    model.validate_nodes_and_infer_types()
    return model


from vinolm.engines.ovconfig import compile_properties
from vinolm.models import prepare

MODEL = prepare("smollm2-135m", "int8", progress=lambda _: None)
PROPS = compile_properties("CPU", {}, None, export=MODEL.weights)
CORE = ov.Core()


def request(kind):
    m = CORE.read_model(MODEL.path / "openvino_model.xml")
    if kind != "plain":
        fold_kv_heads(m, pad=1 if kind == "pad" else 0)
    return CORE.compile_model(m, "CPU", PROPS).create_infer_request()


def run(r, toks, start, rows=1):
    r.infer({"input_ids": np.array([toks] * rows), "attention_mask": np.ones((rows, start + len(toks)), dtype=np.int64),
             "position_ids": np.tile(np.arange(start, start + len(toks)), (rows, 1)),
             "beam_idx": np.arange(rows, dtype=np.int32)})
    return r.get_output_tensor(0).data.copy()


def prompt(n):
    return [100 + (i * 37) % 5000 for i in range(n)]


def pass_vs_steps(r, P, cont, rows=1):
    r.reset_state(); run(r, prompt(P), 0, rows)
    steps = np.stack([run(r, [t], P + i, rows)[:, -1] for i, t in enumerate(cont)], axis=1)
    r.reset_state(); run(r, prompt(P), 0, rows)
    return steps, run(r, cont, P, rows)[:, -len(cont):]


def main(mode, kind="fold", length="700"):
    cont = np.random.default_rng(0).integers(100, 5000, 11).tolist()
    if mode == "rows":
        r = request("plain")
        for P in range(100, 1000, 100):
            steps, p = pass_vs_steps(r, P, cont, rows=3)
            print(P, "max |pass - steps| per row:", " ".join(f"{d:.3g}" for d in np.abs(steps - p).max(axis=(1, 2))))
    elif mode == "exact":
        reqs = {"plain": request("plain"), kind: request(kind)}
        for P in range(100, 1000, 53):
            res = {k: pass_vs_steps(r, P, cont) for k, r in reqs.items()}
            d = {k: float(np.abs(s - p).max()) for k, (s, p) in res.items()}
            x = float(np.abs(res["plain"][0] - res[kind][0]).max())
            print(P, f"pass vs steps: untouched {d['plain']:.3g}, {kind} {d[kind]:.3g}; steps untouched vs {kind} {x:.3g}")
    else:
        P = int(length)
        reqs = {"plain": request("plain"), kind: request(kind)}
        out = {}
        for _ in range(12):
            for k, r in reqs.items():
                for n in (6, 11):
                    r.reset_state(); run(r, prompt(P), 0); run(r, [5], P); run(r, [6], P + 1)
                    t0 = time.perf_counter(); run(r, [7] * n, P + 2); out.setdefault((k, f"pass of {n}"), []).append(time.perf_counter() - t0)
                ts = []
                for i in range(10):
                    t0 = time.perf_counter(); run(r, [8], P + 13 + i); ts.append(time.perf_counter() - t0)
                out.setdefault((k, "token step"), []).append(np.median(ts))
        for (k, what), v in sorted(out.items()):
            print(f"{k:6s} {what:11s} {np.median(v) * 1e3:.2f} ms (median of {len(v)})")


if __name__ == "__main__":
    main(*sys.argv[1:])
