#!/usr/bin/env python3
"""Writes tests/data/torch_mha.safetensors: PyTorch `nn.MultiheadAttention` outputs for
tests/torch_mha.rs, which holds the engine with `wgattn::masks` converters against them
(PyTorch's mask conventions, checked against PyTorch itself, in `cargo test` without torch).

Each scenario is one `nn.MultiheadAttention(E, H, batch_first=True, bias=False)` in float64
with identity in- and out-projections, so its output is the attention of the heads that
`[N, L, E]` = `[B, S, H*D]` holds (layout bshd): inputs `<name>.query` [N, L, E],
`<name>.key` / `<name>.value` [N, S, E] (f32 values), the masks in torch's conventions
(`<name>.key_padding_mask` [N, S], true = padding; `<name>.attn_mask` [L, S] or [N*H, L, S],
true = blocked; as U8), and torch's results `<name>.out` [N, L, E] and `<name>.weights`
[N, H, L, S] (float64). Rows that no key may see are avoided: torch's own result there is NaN.

    python3 tests/oracle/make_torch_fixtures.py   # needs torch (requirements-torch.txt)
"""

import os

import numpy as np
import torch

from cases import write_safetensors

OUT = os.path.join(os.path.dirname(__file__), "..", "data", "torch_mha.safetensors")


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
    st = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.uint8): "U8"}
    tensors = {}
    for name, parts in scenarios.items():
        for part, a in parts.items():
            a = np.ascontiguousarray(a)
            tensors[f"{name}.{part}"] = (st[a.dtype], a.shape, a.astype(a.dtype.newbyteorder("<")).tobytes())
    write_safetensors(OUT, tensors, {"torch": torch.__version__})
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
