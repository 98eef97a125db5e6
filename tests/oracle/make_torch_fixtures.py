#!/usr/bin/env python3
"""Writes the fixtures of tests/from_pytorch.rs, which holds the engine with the
`wgattn::masks` converters against results PyTorch and HF Transformers computed (their mask
conventions, checked against their own code, in `cargo test` without either installed).

tests/data/torch_mha.safetensors: `nn.MultiheadAttention`.

Each scenario is one `nn.MultiheadAttention(E, H, batch_first=True, bias=False)` in float64
with identity in- and out-projections, so its output is the attention of the heads that
`[N, L, E]` = `[B, S, H*D]` holds (layout bshd): inputs `<name>.query` [N, L, E],
`<name>.key` / `<name>.value` [N, S, E] (f32 values), the masks in torch's conventions
(`<name>.key_padding_mask` [N, S], true = padding; `<name>.attn_mask` [L, S] or [N*H, L, S],
true = blocked; as U8), and torch's results `<name>.out` [N, L, E] and `<name>.weights`
[N, H, L, S] (float64). Rows that no key may see are avoided: torch's own result there is NaN.

tests/data/hf_attention.safetensors: the attention of layer 0 of tiny randomly initialized HF
models, captured inside the model (an attention function registered in place of HF's own,
which it calls): `<name>.q` [B, Hq, Lq, D], `<name>.k` / `<name>.v` [B, Hkv, Lk, D] (what HF
hands its attention, RoPE applied), `<name>.past_k` / `<name>.past_v` for a decode step (the
cache before it), `<name>.attention_mask` [B, Lt] (HF's 1/0 padding mask, as the model got it)
and `<name>.out` [B, Hq, Lq, D] (HF's result, float32); the metadata `<name>` holds the
options in this crate's terms (JSON: causal, scale, window_left, softcap).

    python3 -m pip install -r tests/oracle/requirements-torch.txt
    python3 tests/oracle/make_torch_fixtures.py
"""

import json
import os

import numpy as np
import torch

from cases import write_safetensors

DATA = os.path.join(os.path.dirname(__file__), "..", "data")


def scenario(rng, n, l, s, e, h, mask_shape, key_padding):
    """One scenario's tensors: random f32 inputs and masks, torch's output."""
    query = rng.standard_normal((n, l, e)).astype(np.float32)
    key = rng.standard_normal((n, s, e)).astype(np.float32)
    value = rng.standard_normal((n, s, e)).astype(np.float32)
    while True:
        kpm = np.zeros((n, s), bool)
        if key_padding:
            for b in range(n):
                kpm[b, s - int(rng.integers(0, s // 2 + 1)):] = True
        if mask_shape == "causal":
            attn = np.triu(np.ones((l, s), bool), k=1 + s - l)
        else:
            attn = rng.random(mask_shape) < 0.3
        blocked = np.broadcast_to(kpm[:, None, None, :], (n, h, l, s)) | attn.reshape(
            (-1, h, l, s) if attn.ndim == 3 else (l, s))
        if not blocked.all(axis=-1).any():
            break
    mha = torch.nn.MultiheadAttention(e, h, bias=False, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([torch.eye(e, dtype=torch.float64)] * 3))
        mha.out_proj.weight.copy_(torch.eye(e, dtype=torch.float64))
    mha.eval()
    t = lambda a: torch.tensor(a.astype(np.float64))  # noqa: E731
    with torch.no_grad():
        out, weights = mha(t(query), t(key), t(value),
                           key_padding_mask=torch.tensor(kpm) if key_padding else None,
                           attn_mask=torch.tensor(attn), need_weights=True,
                           average_attn_weights=False)
    tensors = {"query": query, "key": key, "value": value,
               "attn_mask": attn.astype(np.uint8), "out": out.numpy(),
               "weights": weights.numpy()}
    if key_padding:
        tensors["key_padding_mask"] = kpm.astype(np.uint8)
    return tensors


def hf_scenarios():
    """The HF scenarios: name -> (tensors, options)."""
    import transformers
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import eager_mask
    from transformers.models.gemma2 import modeling_gemma2

    calls = []

    def capturing(inner):
        def attention(module, query, key, value, attention_mask, **kwargs):
            out, weights = inner(module, query, key, value, attention_mask, **kwargs)
            calls.append((query, key, value, out, kwargs))
            return out, weights
        return attention

    AttentionInterface.register("sdpa", capturing(sdpa_attention_forward))
    # Gemma 2's softcap needs HF's eager attention, which is not in the registry by name.
    AttentionInterface.register("eager_captured",
                                capturing(modeling_gemma2.eager_attention_forward))
    AttentionMaskInterface.register("eager_captured", eager_mask)
    small = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, num_hidden_layers=1, vocab_size=100)

    def run(model, *steps):
        """Runs the model on each (input_ids, attention_mask) in turn with one cache; returns
        the last call's captured attention as numpy (out back to bhsd)."""
        cache = transformers.DynamicCache(config=model.config)
        with torch.no_grad():
            for ids, mask in steps:
                model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        q, k, v, out, kwargs = calls[-1]
        return ([a.numpy() for a in (q, k, v)] + [out.transpose(1, 2).numpy()], kwargs)

    def tensors(q, k, v, out, mask, past=0):
        t = {"q": q, "k": k[:, :, past:], "v": v[:, :, past:], "out": out,
             "attention_mask": mask.numpy().astype(np.int64)}
        if past:
            t["past_k"], t["past_v"] = k[:, :, :past], v[:, :, :past]
        return t

    def options(kwargs, window=None):
        return {"causal": True, "scale": kwargs["scaling"], "softcap": kwargs.get("softcap", 0.0),
                "window_left": window - 1 if window else -1}

    torch.manual_seed(20261206)
    out = {}
    # Llama, GQA 4/2, a right-padded batch (HF's padding mask with causal attention).
    llama = transformers.LlamaModel(transformers.LlamaConfig(**small, attn_implementation="sdpa"))
    llama.eval()
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    (q, k, v, o), kw = run(llama, (torch.randint(0, 100, (2, 7)), mask))
    out["llama_padded"] = (tensors(q, k, v, o, mask), options(kw))
    # The same model, a left-padded batch (as HF generates), one decode step after a prefill
    # of six: the query sits at position P = 6 of the keys.
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    (q, k, v, o), kw = run(llama, (torch.randint(0, 100, (2, 6)), mask[:, :6]),
                           (torch.randint(0, 100, (2, 1)), mask))
    out["llama_decode"] = (tensors(q, k, v, o, mask, past=6), options(kw))
    # Mistral's sliding window (HF's sliding_window = 3: the query and the two keys before).
    mistral = transformers.MistralModel(transformers.MistralConfig(
        **small, sliding_window=3, attn_implementation="sdpa")).eval()
    mask = torch.ones(1, 9, dtype=torch.int64)
    (q, k, v, o), kw = run(mistral, (torch.randint(0, 100, (1, 9)), mask))
    out["mistral_window"] = (tensors(q, k, v, o, mask), options(kw, window=kw["sliding_window"]))
    # Gemma 2: logit softcapping, query_pre_attn_scalar's scale, a sliding layer, padding.
    gemma = transformers.Gemma2Model(transformers.Gemma2Config(
        **small, sliding_window=4, attn_logit_softcapping=30.0, query_pre_attn_scalar=24,
        attn_implementation="eager_captured")).eval()
    mask = torch.tensor([[1] * 7, [1] * 6 + [0]])
    (q, k, v, o), kw = run(gemma, (torch.randint(0, 100, (2, 7)), mask))
    out["gemma2_softcap"] = (tensors(q, k, v, o, mask), options(kw, window=kw["sliding_window"]))
    return out, transformers.__version__


def write(name, scenarios, metadata):
    """scenarios: name -> {part: array}; one file of `<scenario>.<part>` tensors."""
    st = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.uint8): "U8",
          np.dtype(np.int64): "I64"}
    tensors = {}
    for scenario, parts in scenarios.items():
        for part, a in parts.items():
            a = np.ascontiguousarray(a)
            tensors[f"{scenario}.{part}"] = (st[a.dtype], a.shape,
                                             a.astype(a.dtype.newbyteorder("<")).tobytes())
    path = os.path.join(DATA, name)
    write_safetensors(path, tensors, metadata)
    print(f"wrote {os.path.normpath(path)} ({os.path.getsize(path)} bytes)")


def main():
    rng = np.random.default_rng(20261206)
    scenarios = {
        # Both masks: padding [N, S] and a per-head mask [N*H, L, S].
        "per_head": scenario(rng, 2, 5, 7, 16, 4, (2 * 4, 5, 7), True),
        # Causal over a longer key range as an [L, S] mask, with padding.
        "causal": scenario(rng, 3, 4, 9, 12, 3, "causal", True),
        # An [L, S] mask alone, one head of 8.
        "shared": scenario(rng, 1, 6, 6, 8, 1, (6, 6), False),
    }
    write("torch_mha.safetensors", scenarios, {"torch": torch.__version__})
    hf, version = hf_scenarios()
    meta = {"torch": torch.__version__, "transformers": version}
    meta.update({name: json.dumps(options) for name, (_, options) in hf.items()})
    write("hf_attention.safetensors", {name: t for name, (t, _) in hf.items()}, meta)


if __name__ == "__main__":
    main()
