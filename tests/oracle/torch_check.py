#!/usr/bin/env python3
"""wgattn against PyTorch: `scaled_dot_product_attention` and FlexAttention (`flex_attention`
with `score_mod` and `mask_mod`, whose model the engine's mods follow).

Random cases (seeded) combine what SEMANTICS.md allows: GQA/MQA, odd head sizes, Dv != D, both
layouts, f32/f16/bf16, a past KV cache, key lengths, causal with derived and explicit offsets
(negative ones too), sliding windows, softcap, explicit scale, boolean and additive mask
tensors of rank 1 to 4 with broadcast axes and short last axes, large logits; and the mods of
`wgattn::MaskMods`: segments, prefix-LM, ALiBi (one-sided and symmetric, given and default
slopes), blocked tokens (by id and by class), modalities, and user `mask_mod` / `score_mod`
WGSL snippets with auxiliary tensors. Each case is written as a case file, run through
`wgattn run` on every path asked for (the CPU reference only without user snippets, which it
cannot compile), and compared with

- FlexAttention (float64, PyTorch's eager implementation): every case; the structured masks,
  the bool mask tensor and the mods become one `mask_mod`, softcap, the user's score_mod, ALiBi
  and the additive mask one `score_mod`, each written here from SEMANTICS.md and the
  `MaskMods` docs, the snippets as the equivalent Python;
- `scaled_dot_product_attention` (float64): the cases without softcap and user score_mod, all
  their masks as one float `attn_mask` (`is_causal=True` where plain causal is the only mask);
- the contract's steps written in torch ops on the dense scores ("steps"): the `scores`,
  `logits` and `probs` intermediates the staged and reference paths return, score_mod and
  ALiBi included.

Both oracles give a row that no key may see 0, as the contract does. Needs torch (`pip install
torch numpy`) and a built `wgattn` binary (the `cli` feature). Exits non-zero when any
comparison fails; `--self-check` skews the oracles' scale by 0.3% and succeeds only if the
comparisons notice.

    python3 tests/oracle/torch_check.py --wgattn target/debug/wgattn --cases 60 --seed 1
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.nn.attention.flex_attention as flex
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from cases import (WORST, Float, Report, arguments, build_inputs, case_directory, compare,
                   describe, random_case, run_paths, write_safetensors, zero_rows)

# FlexAttention's own unfused implementation, run directly (not traced by dynamo, which
# refuses the Python floats the functions below capture): the scores in full, score_mod and
# mask_mod applied to them, a safe softmax. Forward only, which is all this needs.
flex._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True

# What the oracles multiply the scale by: 1, or (--self-check) a small error to be caught.
SCALE_SKEW = 1.0

# ---------------------------------------------------------------------------------------------
# user snippets: the WGSL a case file carries and the same function in Python ({Lq}, {Lt} are
# the case's sizes; `aux` names the auxiliary tensors each needs)

MASK_MODS = [
    ("return (q + k + h) % 3u != 1u;",
     lambda t, b, h, q, k: (q + k + h) % 3 != 1, []),
    ("return aux_kdoc[b * {Lt}u + k] == aux_qdoc[b * {Lq}u + q];",
     lambda t, b, h, q, k: t["kdoc"][b, k] == t["qdoc"][b, q], ["kdoc", "qdoc"]),
    ("return k < 3u || k + 2u > q * 2u;",
     lambda t, b, h, q, k: (k < 3) | (k + 2 > q * 2), []),
    ("return aux_keep[h * {Lt}u + k] != 0u;",
     lambda t, b, h, q, k: t["keep"][h, k] != 0, ["keep"]),
]

SCORE_MODS = [
    ("return s + aux_hbias[h] * f32(k);",
     lambda t, s, b, h, q, k: s + t["hbias"][h] * k, ["hbias"]),
    ("return s * 0.75 + 0.01 * f32(q) - 0.02 * f32(b);",
     lambda t, s, b, h, q, k: s * 0.75 + 0.01 * q - 0.02 * b, []),
    ("if ((k + q) % 4u == 0u) { return minus_infinity(); } return s;",
     lambda t, s, b, h, q, k: torch.where((k + q) % 4 == 0, NEG_INF, s), []),
    ("return 3.0 * tanh(s / 3.0);",
     lambda t, s, b, h, q, k: 3.0 * torch.tanh(s / 3.0), []),
    ("return s + aux_kbias[b * {Lt}u + k];",
     lambda t, s, b, h, q, k: s + t["kbias"][b, k], ["kbias"]),
    ("if (h == 0u && q == 0u) { return minus_infinity(); } return s;",
     lambda t, s, b, h, q, k: torch.where((h == 0) & (q == 0), NEG_INF, s), []),
]

NEG_INF = torch.tensor(float("-inf"), dtype=torch.float64)


def alibi_slopes(n):
    """The ALiBi paper's slopes for n heads (as in HF `build_alibi_tensor`)."""
    def pow2(m):
        start = 2.0 ** (-8.0 / m)
        return [start ** (i + 1) for i in range(m)]
    closest = 1 << (n.bit_length() - 1)
    slopes = pow2(closest)
    if closest < n:
        slopes += pow2(2 * closest)[0::2][:n - closest]
    return np.array(slopes, dtype=np.float32).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# random cases


def own_options(rng, c):
    """What this check draws beyond the shared options: an explicit causal offset and the
    mods."""
    Lt = c["P"] + c["Lk"]
    c["offset"] = int(rng.integers(-3, Lt + 1)) if rng.random() < 0.15 else None
    c["segments"] = rng.random() < 0.25
    c["prefix"] = rng.random() < 0.2
    c["alibi"] = str(rng.choice(["one-sided", "symmetric"])) if rng.random() < 0.25 else None
    c["alibi_given"] = bool(rng.random() < 0.5)
    c["tokens"] = str(rng.choice(["ids", "classes"])) if rng.random() < 0.2 else None
    c["modalities"] = rng.random() < 0.2
    c["mask_mod"] = int(rng.integers(len(MASK_MODS))) if rng.random() < 0.3 else None
    c["score_mod"] = int(rng.integers(len(SCORE_MODS))) if rng.random() < 0.3 else None


def describe_all(c, x):
    parts = describe(c, x)
    flags = {"segments": c["segments"], "prefix-LM": c["prefix"], "modalities": c["modalities"]}
    parts += [name for name, on in flags.items() if on]
    if c["offset"] is not None:
        parts.append(f"offset {c['offset']}")
    if c["alibi"]:
        parts.append(f"alibi {c['alibi']}{'' if c['alibi_given'] else ' (default slopes)'}")
    if c["tokens"]:
        parts.append(f"blocked tokens by {c['tokens']}")
    if c["mask_mod"] is not None:
        parts.append(f"mask_mod #{c['mask_mod']}")
    if c["score_mod"] is not None:
        parts.append(f"score_mod #{c['score_mod']}")
    return ", ".join(parts)


def build(c, directory):
    """Writes the case file; returns its path and what the oracles need (float64 tensors in
    bhsd, the masks spelled out)."""
    rng = np.random.default_rng(c["seed"])
    tensors, x, meta = build_inputs(c, rng)
    B, Hq, Lq, P, Lk = (c[k] for k in ("B", "Hq", "Lq", "P", "Lk"))
    Lt = P + Lk

    def ints(name, values, st="I64"):
        values = np.asarray(values)
        np_dtype = {"I64": "<i8", "I32": "<i4", "U32": "<u4"}[st]
        tensors[name] = (st, values.shape, values.astype(np_dtype).tobytes())
        x[name] = values.astype(np.int64)

    if c["offset"] is not None:
        meta["causal_offset"] = str(c["offset"])
    if c["segments"]:
        # Few segments, sorted as packed documents are, so that rows see some keys.
        kv = np.sort(rng.integers(0, 3, size=(B, Lt)), axis=1)
        qs = np.sort(rng.integers(0, 3, size=(B, Lq)), axis=1)
        ints("q_segment", qs, str(rng.choice(["I64", "I32"])))
        ints("kv_segment", kv, str(rng.choice(["I64", "I32"])))
    if c["prefix"]:
        ints("prefix_len", rng.integers(0, Lt + 1, size=B))
    if c["alibi"]:
        meta["alibi"] = c["alibi"]
        if c["alibi_given"]:
            slopes = rng.uniform(0.01, 0.5, size=Hq).astype(np.float32)
            tensors["alibi_slopes"] = ("F32", (Hq,), slopes.astype("<f4").tobytes())
            x["slopes"] = slopes.astype(np.float64)
        else:
            x["slopes"] = alibi_slopes(Hq)
    if c["tokens"]:
        vocab = 12
        ids = rng.integers(0, vocab, size=(B, Lt))
        ints("kv_token_ids", ids)
        if c["tokens"] == "ids":
            blocked = rng.integers(0, vocab + 4, size=int(rng.integers(0, 5)))
            meta["blocked_ids"] = ",".join(str(int(i)) for i in blocked)
            x["key_blocked"] = np.isin(ids, blocked)
        else:
            classes = rng.integers(0, 4, size=vocab)
            ints("token_classes", classes, "I32")
            blocked = rng.integers(0, 4, size=int(rng.integers(1, 3)))
            meta["blocked_classes"] = ",".join(str(int(i)) for i in blocked)
            x["key_blocked"] = np.isin(classes[ids], blocked)
    if c["modalities"]:
        m = int(rng.integers(1, 4))
        ints("modality_q", rng.integers(0, m, size=(B, Lq)), "U32")
        ints("modality_kv", rng.integers(0, m, size=(B, Lt)), "U32")
        allow = rng.random((m, m)) < 0.7
        np.fill_diagonal(allow, True)
        tensors["modality_allow"] = ("BOOL", (m, m), allow.astype(np.uint8).tobytes())
        causal = rng.random(m) < 0.5
        tensors["modality_causal"] = ("BOOL", (m,), causal.astype(np.uint8).tobytes())
        x["modality_allow"], x["modality_causal"] = allow, causal
    aux_needed = []
    if c["mask_mod"] is not None:
        wgsl, _, aux = MASK_MODS[c["mask_mod"]]
        meta["mask_mod"] = wgsl.replace("{Lq}", str(Lq)).replace("{Lt}", str(Lt))
        aux_needed += aux
    if c["score_mod"] is not None:
        wgsl, _, aux = SCORE_MODS[c["score_mod"]]
        meta["score_mod"] = wgsl.replace("{Lq}", str(Lq)).replace("{Lt}", str(Lt))
        aux_needed += aux
    aux = {}
    for name in aux_needed:
        if name in ("kdoc", "qdoc"):
            v = np.sort(rng.integers(0, 3, size=(B, Lt if name == "kdoc" else Lq)), axis=1)
            st, np_dtype = "I32", "<i4"
        elif name == "keep":
            v = (rng.random((Hq, Lt)) < 0.8).astype(np.uint32)
            st, np_dtype = "U32", "<u4"
        elif name == "hbias":
            v = rng.uniform(-0.2, 0.2, size=Hq).astype(np.float32)
            st, np_dtype = "F32", "<f4"
        else:  # kbias
            v = (rng.standard_normal((B, Lt)) * 1.5).astype(np.float32)
            v[rng.random((B, Lt)) < 0.1] = -np.inf
            st, np_dtype = "F32", "<f4"
        tensors[f"aux_{name}"] = (st, v.shape, v.astype(np_dtype).tobytes())
        aux[name] = torch.tensor(v.astype(np.float64) if st == "F32" else v.astype(np.int64))
    x["aux"] = aux
    path = os.path.join(directory, f"case{c['index']}.safetensors")
    write_safetensors(path, tensors, meta)
    return path, x


# ---------------------------------------------------------------------------------------------
# the oracles


def spelled_out(c, mask, fill):
    """A mask tensor broadcast to [B, Hq, Lq, Lt], right-aligned; a short last axis padded
    with `fill` (the missing trailing keys are disallowed)."""
    Lt = c["P"] + c["Lk"]
    pad = Lt - mask.shape[-1]
    if pad:
        mask = np.concatenate([mask, np.full(mask.shape[:-1] + (pad,), fill, mask.dtype)], -1)
    return np.broadcast_to(mask, (c["B"], c["Hq"], c["Lq"], Lt)).copy()


class Mods:
    """The case's whole bias as FlexAttention's two functions of (b, h, q, k) index tensors,
    written from SEMANTICS.md and the `MaskMods` docs; they broadcast, so they also give the
    dense [B, Hq, Lq, Lt] mask and logits."""

    def __init__(self, c, x):
        self.c, self.x, self.aux = c, x, x["aux"]
        B, Lq = c["B"], c["Lq"]
        t = lambda name: torch.tensor(x[name]) if name in x else None  # noqa: E731
        if c["offset"] is not None:
            offset = np.full(B, c["offset"])
        elif c["P"]:
            offset = np.full(B, c["P"])
        elif c["kv_lengths"]:
            offset = x["kv_lengths"] - Lq
        else:
            offset = np.zeros(B, dtype=np.int64)
        self.offset = torch.tensor(offset, dtype=torch.int64)
        self.kv_len = t("kv_lengths")
        self.bool_mask = (torch.tensor(spelled_out(c, x["mask"], False))
                          if c["mask"] == "bool" else None)
        self.add_mask = (torch.tensor(spelled_out(c, x["mask"], -np.inf))
                         if c["mask"] == "additive" else None)
        self.seg_q, self.seg_kv = t("q_segment"), t("kv_segment")
        self.prefix = t("prefix_len")
        self.slopes = t("slopes")
        self.key_blocked = t("key_blocked")
        self.mod_q, self.mod_kv = t("modality_q"), t("modality_kv")
        self.mod_allow, self.mod_causal = t("modality_allow"), t("modality_causal")

    def mask_mod(self, b, h, q, k):
        c = self.c
        pos = q + self.offset[b]
        ok = k >= 0
        if c["causal"]:
            ok = ok & (k <= pos)
        if c["left"] >= 0:
            ok = ok & (k >= pos - c["left"])
        if c["right"] >= 0:
            ok = ok & (k <= pos + c["right"])
        if self.kv_len is not None:
            ok = ok & (k < self.kv_len[b])
        if self.bool_mask is not None:
            ok = ok & self.bool_mask[b, h, q, k]
        if self.seg_q is not None:
            ok = ok & (self.seg_q[b, q] == self.seg_kv[b, k])
        if self.prefix is not None:
            ok = ok & ((k < self.prefix[b]) | (k <= pos))
        if self.key_blocked is not None:
            ok = ok & ~self.key_blocked[b, k]
        if self.mod_q is not None:
            mq = self.mod_q[b, q]
            ok = ok & self.mod_allow[mq, self.mod_kv[b, k]] & (~self.mod_causal[mq] | (k <= pos))
        if c["mask_mod"] is not None:
            ok = ok & MASK_MODS[c["mask_mod"]][1](self.aux, b, h, q, k)
        return ok

    def modded(self, s, b, h, q, k):
        """The `scores` intermediate: softcap, then the user's score_mod."""
        c = self.c
        if c["softcap"]:
            s = c["softcap"] * torch.tanh(s / c["softcap"])
        if c["score_mod"] is not None:
            s = SCORE_MODS[c["score_mod"]][1](self.aux, s, b, h, q, k)
        return s

    def added(self, b, h, q, k):
        """The additive terms of the bias: ALiBi and the additive mask."""
        add = torch.zeros((), dtype=torch.float64)
        if self.slopes is not None:
            d = q + self.offset[b] - k
            if self.c["alibi"] == "symmetric":
                d = d.abs()
            add = add - self.slopes[h] * d
        if self.add_mask is not None:
            add = add + self.add_mask[b, h, q, k]
        return add

    def score_mod(self, s, b, h, q, k):
        return self.modded(s, b, h, q, k) + self.added(b, h, q, k)

    def grid(self):
        c = self.c
        Lt = c["P"] + c["Lk"]
        return (torch.arange(c["B"]).view(-1, 1, 1, 1), torch.arange(c["Hq"]).view(1, -1, 1, 1),
                torch.arange(c["Lq"]).view(1, 1, -1, 1), torch.arange(Lt).view(1, 1, 1, -1))

    def steps(self, raw):
        """The contract's steps 2 to 5 on the dense raw scores `scale·q·kᵀ` [B, Hq, Lq, Lt]:
        the `scores`, `logits` and `probs` intermediates (float64 numpy)."""
        b, h, q, k = self.grid()
        scores = self.modded(raw, b, h, q, k)
        logits = torch.where(self.mask_mod(b, h, q, k), scores + self.added(b, h, q, k),
                             NEG_INF)
        dead = torch.isneginf(logits).all(dim=-1, keepdim=True)
        probs = torch.where(dead, 0.0, torch.softmax(torch.where(dead, 0.0, logits), dim=-1))
        return {"scores": scores.numpy(), "logits": logits.numpy(), "probs": probs.numpy()}


def oracle_inputs(c, x):
    q = torch.tensor(x["q"])
    k = torch.tensor(np.concatenate([x[n] for n in ("past_k", "k") if n in x], axis=2))
    v = torch.tensor(np.concatenate([x[n] for n in ("past_v", "v") if n in x], axis=2))
    scale = c["scale"] if c["scale"] is not None else 1.0 / np.sqrt(c["D"])
    return q, k, v, scale * SCALE_SKEW


def flex_oracle(c, x, mods):
    q, k, v, scale = oracle_inputs(c, x)
    Lt = k.shape[2]
    # (flex wants plain functions, not bound methods)
    block_mask = create_block_mask(lambda b, h, q, k: mods.mask_mod(b, h, q, k), c["B"], c["Hq"],
                                   c["Lq"], Lt, device="cpu")
    # (flex_attention needs D == Dv == a power of two >= 16 in its compiled kernels, not in
    # the eager implementation used here.)
    return flex_attention(q, k, v, score_mod=lambda s, b, h, q, k: mods.score_mod(s, b, h, q, k),
                          block_mask=block_mask,
                          scale=scale, enable_gqa=c["Hq"] != c["Hkv"]).numpy()


def sdpa_oracle(c, x, mods):
    """None where SDPA cannot express the case (softcap, a user score_mod)."""
    if c["softcap"] or c["score_mod"] is not None:
        return None
    q, k, v, scale = oracle_inputs(c, x)
    only_causal = (c["causal"] and c["offset"] is None and not c["P"] and not c["kv_lengths"]
                   and not c["window"] and c["mask"] == "none" and not any(
                       c[m] for m in ("segments", "prefix", "alibi", "tokens", "modalities"))
                   and c["mask_mod"] is None)
    gqa = c["Hq"] != c["Hkv"]
    F = torch.nn.functional
    if only_causal and c["Lq"] <= k.shape[2]:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                              enable_gqa=gqa).numpy()
    b, h, qi, ki = mods.grid()
    bias = torch.where(mods.mask_mod(b, h, qi, ki),
                       mods.score_mod(torch.zeros((), dtype=torch.float64), b, h, qi, ki),
                       NEG_INF)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale,
                                          enable_gqa=gqa).numpy()


def tolerances(c, x, logits):
    """(For `out` and `probs`, for `scores` and `logits`): the output rounding of the dtype,
    plus f32 arithmetic whose error in a logit grows with the size of what it sums (the terms
    of scale·q·k and the logits themselves)."""
    finite = logits[np.isfinite(logits)]
    _, k, _, scale = oracle_inputs(c, x)
    terms = scale * np.linalg.norm(x["q"], axis=-1).max() * float(k.norm(dim=-1).max())
    big = max(float(np.abs(finite).max()) if finite.size else 0.0, float(terms))
    arith = 2.0 ** -23 * 8 * np.sqrt(c["D"]) * (1.0 + big)
    eps = Float(c["dtype"]).eps
    return 2 * eps + 4 * arith, 2 * eps + arith


def check(c, x, result, want, tols, fully_masked):
    """The problems of one result against one oracle: `want` is `out`, or (the steps) the
    intermediates."""
    if isinstance(want, dict):
        t_out, t_logit = tols
        return [p for p in (compare(name, result[name], want[name],
                                    t_out if name == "probs" else t_logit)
                            for name in ("scores", "logits", "probs")) if p]
    bshd = c["layout"] == "bshd"
    out = np.transpose(result["out"], (0, 2, 1, 3)) if bshd else result["out"]
    problems = [compare("out", result["out"], want, tols[0], bshd), zero_rows(out, fully_masked)]
    if c["P"]:
        for name, past, new in (("present_k", "past_k", "k"), ("present_v", "past_v", "v")):
            problems.append(compare(name, result[name],
                                    np.concatenate([x[past], x[new]], axis=2), 0.0))
    return [p for p in problems if p]


def main():
    args = arguments(__doc__).parse_args()
    if args.self_check:
        global SCALE_SKEW
        SCALE_SKEW = 1.003
    rng = np.random.default_rng(args.seed)
    directory = case_directory(args, "wgattn-torch-")
    report = Report(args)
    for index in range(args.cases):
        c = random_case(rng, index, own_options)
        case, x = build(c, directory)
        mods = Mods(c, x)
        q, k, _, scale = oracle_inputs(c, x)
        kk = k.repeat_interleave(c["Hq"] // c["Hkv"], dim=1)
        steps = mods.steps(scale * (q @ kk.transpose(-1, -2)))
        fully_masked = np.isneginf(steps["logits"]).all(axis=-1)
        wants = {"flex_attention": flex_oracle(c, x, mods), "sdpa": sdpa_oracle(c, x, mods)}
        wants = {name: w for name, w in wants.items() if w is not None}
        tols = tolerances(c, x, steps["logits"])
        report.case(f"case {index}: {describe_all(c, x)}; fully masked rows "
                    f"{int(fully_masked.sum())}/{fully_masked.size}")
        # (The reference cannot compile the user's WGSL snippets.)
        snippets = c["mask_mod"] is not None or c["score_mod"] is not None
        for label, returns, result, error in run_paths(args, rng, case, directory, index, report,
                                                       reference=not snippets):
            for oracle, want in (dict(wants, steps=steps) if returns else wants).items():
                WORST[0] = 0.0
                report.compared(label, oracle, [f"wgattn failed: {error}"] if error
                                else check(c, x, result, want, tols, fully_masked))
    status = report.verdict(f"PyTorch {torch.__version__} (flex_attention and "
                            f"scaled_dot_product_attention, float64)")
    print(f"cases in {directory}")
    return status


if __name__ == "__main__":
    sys.exit(main())
