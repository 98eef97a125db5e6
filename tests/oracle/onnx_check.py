#!/usr/bin/env python3
"""wgattn against an oracle it was not written with: the ONNX `Attention` operator.

Random cases (seeded) cover what SEMANTICS.md and ONNX `Attention` (opset 25) both express:
GQA/MQA, head sizes multiple of 4 and odd, Dv != D, both layouts, f32/f16/bf16, a past KV cache, key lengths
(`nonpad_kv_seqlen`), causal, sliding windows, softcap, explicit scale, boolean and additive
masks of rank 1 to 4 with broadcast axes and short last axes, fully masked rows and large
logits. Each case is written as a case file, run through `wgattn run` on every path asked for,
and compared with the ONNX reference implementation (`onnx.reference.ReferenceEvaluator`, run
in float64 on the exact input values), which is the operator's own executable definition:
`out`, `present_k`/`present_v`, and on the staged path the `scores`, `logits` and `probs`
intermediates (ONNX `qk_matmul_output` modes 1, 2 and 3).

The fused path also runs under random `--tuning` lists (small tiles and splits, the other
decode layout, the shader-f16 and subgroup fallbacks), every GPU run with `--poison`. With
`--oracles onnx,onnxruntime` ONNX Runtime's CPU kernel (float32) is a second oracle.
`--self-check` skews the oracle's scale by 0.3% and succeeds only if the comparisons notice.

Needs numpy and onnx, and onnxruntime for the second oracle (`pip install -r
tests/oracle/requirements.txt`), and a built `wgattn` binary (the `cli` feature). Exits
non-zero when any comparison fails; prints one line per case and path (`--quiet`: failures
and the summary only).

    python3 tests/oracle/onnx_check.py --wgattn target/debug/wgattn --cases 60 --seed 1
"""

from __future__ import annotations

import os
import sys

import numpy as np
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from cases import (WORST, Float, Report, arguments, build_inputs, case_directory, compare,
                   describe, random_case, run_paths, write_safetensors, zero_rows)

# What the oracle multiplies the scale by: 1, or (--self-check) a small error the comparisons
# must catch.
SCALE_SKEW = 1.0

def build(c, directory):
    """Writes the case file; returns its path and the oracle's inputs."""
    tensors, oracle, meta = build_inputs(c, np.random.default_rng(c["seed"]))
    path = os.path.join(directory, f"case{c['index']}.safetensors")
    write_safetensors(path, tensors, meta)
    return path, oracle


# ---------------------------------------------------------------------------------------------
# the oracle


def onnx_attention(c, x, mode, evaluator=ReferenceEvaluator):
    """The oracle's outputs in float64 by name: Y, qk (qk_matmul_output in `mode`), and
    present_key, present_value with a past."""
    names = ["Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen"]
    given = {"Q": x["q"], "K": x["k"], "V": x["v"]}
    if "mask" in x:
        # The mask with its query axis spelled out (broadcasting, so the same mask): with
        # is_causal and no window, the ONNX reference's causal bias takes the query length
        # from the mask's shape (`base.shape[-2:]`), so a mask broadcast over queries ([1, n])
        # would get Lq = 1 and a rank-1 one would fail (onnx 1.23.2,
        # onnx/reference/ops/op_attention.py `_apply_causal`).
        m = x["mask"]
        if m.ndim == 1:
            m = m[np.newaxis, :]
        given["attn_mask"] = np.broadcast_to(m, m.shape[:-2] + (c["Lq"], m.shape[-1])).copy()
    if "past_k" in x:
        given["past_key"], given["past_value"] = x["past_k"], x["past_v"]
    if "kv_lengths" in x:
        given["nonpad_kv_seqlen"] = x["kv_lengths"]
    inputs = []
    for name in names:
        if name not in given:
            continue
        a = given[name]
        if a.dtype == np.bool_:
            elem = TensorProto.BOOL
        elif a.dtype == np.int64:
            elem = TensorProto.INT64
        else:
            elem = TensorProto.DOUBLE
        inputs.append(helper.make_tensor_value_info(name, elem, list(a.shape)))
    attrs = {"is_causal": int(c["causal"]), "qk_matmul_output_mode": mode}
    if c["window"]:
        attrs["left_window_size"] = c["left"]
        attrs["right_window_size"] = c["right"]
    if c["softcap"]:
        attrs["softcap"] = c["softcap"]
    if c["scale"] is not None or SCALE_SKEW != 1.0:
        # (Otherwise ONNX's own default, 1/sqrt(D), which wgattn must match.)
        scale = c["scale"] if c["scale"] is not None else 1.0 / np.sqrt(c["D"])
        attrs["scale"] = scale * SCALE_SKEW
    # present_key/present_value only with a past (ONNX Runtime refuses them beside
    # nonpad_kv_seqlen).
    wanted = ["Y", "present_key", "present_value", "qk"] if "past_key" in given else ["Y", "qk"]
    node = helper.make_node(
        "Attention", [n if n in given else "" for n in names],
        [n if n in wanted else "" for n in ("Y", "present_key", "present_value", "qk")], **attrs)
    outputs = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, None) for n in wanted]
    graph = helper.make_graph([node], "attention", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return dict(zip(wanted, evaluator(model).run(None, given)))


# ---------------------------------------------------------------------------------------------
# comparing


def tolerances(c, x, qk_logits, oracles_f32):
    """(tolerance for out, for scores/logits, for probs): the output rounding of the dtype, plus
    f32 arithmetic whose error in a logit grows with the size of what it sums: the terms of
    scale·q·k (bounded by scale·|q|·|k|, which softcap can leave much larger than the score)
    and the logits themselves; counted twice against an oracle that computes in f32 itself."""
    f = Float(c["dtype"])
    finite = qk_logits[np.isfinite(qk_logits)]
    keys = np.concatenate([x[n] for n in ("past_k", "k") if n in x], axis=2)
    scale = c["scale"] if c["scale"] is not None else 1.0 / np.sqrt(c["D"])
    terms = scale * np.linalg.norm(x["q"], axis=-1).max() * np.linalg.norm(keys, axis=-1).max()
    big = max(float(np.abs(finite).max()) if finite.size else 0.0, float(terms))
    arith = 2.0 ** -23 * 8 * np.sqrt(c["D"]) * (1.0 + big) * (2 if oracles_f32 else 1)
    return (2 * f.eps + 4 * arith, 2 * f.eps + arith, 2 * f.eps + 4 * arith)


class OrtEvaluator:
    """ONNX Runtime (CPU) in ReferenceEvaluator's place: the same one-node model in float32
    (the inputs' stored values are exact in f32), results widened to float64."""

    def __init__(self, model):
        import onnxruntime

        for info in list(model.graph.input) + list(model.graph.output):
            if info.type.tensor_type.elem_type == TensorProto.DOUBLE:
                info.type.tensor_type.elem_type = TensorProto.FLOAT
        model.ir_version = 10
        self.session = onnxruntime.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(self, _, given):
        feed = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in given.items()}
        return [o.astype(np.float64) for o in self.session.run(None, feed)]


ORACLES = {"onnx": ("the ONNX reference (float64)", ReferenceEvaluator),
           "onnxruntime": ("ONNX Runtime CPU (float32)", OrtEvaluator)}


def expected(c, x, oracle):
    """What `oracle` computes for the case: out, present_k/present_v, the intermediates."""
    evaluator = ORACLES[oracle][1]
    first = onnx_attention(c, x, 1, evaluator)
    want = {"out": first["Y"], "scores": first["qk"],
            "logits": onnx_attention(c, x, 2, evaluator)["qk"],
            "probs": onnx_attention(c, x, 3, evaluator)["qk"]}
    if c["P"]:
        want["present_k"], want["present_v"] = first["present_key"], first["present_value"]
    return want


def check(c, x, result, want, oracle):
    """The problems found in one result against one oracle's values."""
    bshd = c["layout"] == "bshd"
    fully_masked = np.isneginf(want["logits"]).all(axis=-1)
    t_out, t_logit, t_prob = tolerances(c, x, want["logits"], oracle == "onnxruntime")
    out = np.transpose(result["out"], (0, 2, 1, 3)) if bshd else result["out"]
    problems = [compare("out", result["out"], want["out"], t_out, bshd),
                zero_rows(out, fully_masked)]
    if c["P"]:
        problems.append(compare("present_k", result["present_k"], want["present_k"], 0.0))
        problems.append(compare("present_v", result["present_v"], want["present_v"], 0.0))
    if "scores" in result:
        problems.append(compare("scores", result["scores"], want["scores"], t_logit))
        problems.append(compare("logits", result["logits"], want["logits"], t_logit))
        problems.append(compare("probs", result["probs"], want["probs"], t_prob))
    return [p for p in problems if p]


def main():
    ap = arguments(__doc__)
    ap.add_argument("--oracles", default="onnx",
                    help="comma-separated: onnx (the ONNX reference implementation), "
                         "onnxruntime (needs `pip install onnxruntime`)")
    args = ap.parse_args()
    oracles = args.oracles.split(",")
    for oracle in oracles:
        if oracle not in ORACLES:
            ap.error(f"unknown oracle {oracle!r}; known: {', '.join(ORACLES)}")

    if args.self_check:
        global SCALE_SKEW
        SCALE_SKEW = 1.003
    rng = np.random.default_rng(args.seed)
    directory = case_directory(args, "wgattn-onnx-")
    report = Report(args)
    for index in range(args.cases):
        c = random_case(rng, index)
        case, x = build(c, directory)
        wants = {oracle: expected(c, x, oracle) for oracle in oracles}
        fully_masked = np.isneginf(wants[oracles[0]]["logits"]).all(axis=-1)
        report.case(f"case {index}: {', '.join(describe(c, x))}; fully masked rows "
                    f"{int(fully_masked.sum())}/{fully_masked.size}")
        for label, _, result, error in run_paths(args, rng, case, directory, index, report):
            for oracle in oracles:
                WORST[0] = 0.0
                report.compared(label, oracle, [f"wgattn failed: {error}"] if error
                                else check(c, x, result, wants[oracle], oracle))
    names = " and ".join(ORACLES[o][0] for o in oracles)
    status = report.verdict(f"ONNX Attention (opset 25): {names}")
    print(f"cases in {directory}")
    return status


if __name__ == "__main__":
    sys.exit(main())
