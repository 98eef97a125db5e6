#!/usr/bin/env python3
"""One layer's attention in an HF Transformers model, as a wgattn case file.

Captures what the model hands its attention at one layer (q, k, v with RoPE applied, GQA heads
as the model has them), writes them with the batch's padding as a boolean key mask and the
layer's options in wgattn's terms (causal, scale, `window_left = sliding_window - 1` on a
sliding layer, softcap), and the model's own attention output beside it
(`CASE.hf.safetensors`, `out` as [B, H, L, D]). Then `wgattn heatmap CASE` shows what attends
to what, `wgattn mask --case CASE` what the masks allow, and `--check` runs `wgattn run` on the
case and compares with the model's output.

The model runs its own eager attention (its modeling file's `eager_attention_forward`, which
every HF decoder has), through an attention function registered for the capture.

    python3 examples/hf_case.py --model PATH_OR_HUB_NAME --text "a prompt" --text "another" \\
        --layer 3 -o case.safetensors --check target/release/wgattn
    python3 examples/hf_case.py --tiny gemma2 --pad 2 -o case.safetensors --check target/release/wgattn

`--tiny llama|mistral|gemma2|bert` builds a small randomly initialized model (no download: a check
of the pipeline, run by .ci/run). Needs torch and transformers (`pip install -r
tests/oracle/requirements-torch.txt`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import eager_mask

TINY = {
    "llama": (transformers.LlamaConfig, transformers.LlamaModel, {}),
    "mistral": (transformers.MistralConfig, transformers.MistralModel, {"sliding_window": 3}),
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2Model,
               {"sliding_window": 4, "attn_logit_softcapping": 30.0, "query_pre_attn_scalar": 24}),
    # An encoder: bidirectional attention (not causal), padding only.
    "bert": (transformers.BertConfig, transformers.BertModel, {}),
}

# What the capture saw at the chosen layer: (q, k, v, out, options).
CAPTURED = []


def capture(layer):
    def attention(module, query, key, value, attention_mask, **kwargs):
        # The model's own eager attention; SDPA's where its modeling file has none (SDPA
        # takes no softcap, which such a model then does not have either).
        eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward",
                        sdpa_attention_forward)
        out, weights = eager(module, query, key, value, attention_mask, **kwargs)
        if getattr(module, "layer_idx", 0) == layer:
            CAPTURED.append((query, key, value, out, {
                "scaling": kwargs.get("scaling", getattr(module, "scaling", None)),
                "softcap": kwargs.get("softcap"),
                "sliding_window": kwargs.get("sliding_window"),
                "causal": getattr(module, "is_causal", True),
            }))
        return out, weights
    return attention


def load(args):
    """The model and the batch: (model, input_ids, attention_mask)."""
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if args.tiny:
        config_class, model_class, extra = TINY[args.tiny]
        torch.manual_seed(args.seed)
        config = config_class(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, num_hidden_layers=2,
                              vocab_size=100, attn_implementation="wgattn_capture", **extra)
        model = model_class(config)
        ids = torch.randint(0, 100, (2, 9))
        mask = torch.ones_like(ids)
        if args.pad:
            mask[1, ids.shape[1] - args.pad:] = 0
    else:
        model = transformers.AutoModel.from_pretrained(
            args.model, attn_implementation="wgattn_capture", dtype=dtype)
        tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        batch = tokenizer(args.text, padding=True, return_tensors="pt")
        ids, mask = batch["input_ids"], batch["attention_mask"]
    return model.to(dtype).eval(), ids, mask


def options(seen, head_dim):
    """The layer's options as case-file metadata."""
    scale = seen["scaling"] if seen["scaling"] is not None else head_dim ** -0.5
    meta = {"causal": "true" if seen["causal"] else "false", "scale": repr(float(scale))}
    if seen["softcap"]:
        meta["softcap"] = repr(float(seen["softcap"]))
    if seen["sliding_window"]:
        meta["window_left"] = str(int(seen["sliding_window"]) - 1)
    return meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a local model directory or a hub name (AutoModel)")
    source.add_argument("--tiny", choices=sorted(TINY), help="a small random model, no download")
    ap.add_argument("--text", action="append", default=[], help="a prompt (repeat for a batch)")
    ap.add_argument("--layer", type=int, default=0)
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    ap.add_argument("--pad", type=int, default=0, help="--tiny: right padding of the second row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True, help="the case file to write")
    ap.add_argument("--check", metavar="WGATTN", help="run the case and compare with the model")
    args = ap.parse_args()
    if args.model and not args.text:
        ap.error("--model needs at least one --text")
    AttentionInterface.register("wgattn_capture", capture(args.layer))
    AttentionMaskInterface.register("wgattn_capture", eager_mask)

    model, ids, mask = load(args)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    if not CAPTURED:
        sys.exit(f"layer {args.layer}: no attention call seen (the model has "
                 f"{model.config.num_hidden_layers} layers)")
    q, k, v, out, seen = CAPTURED[-1]
    meta = options(seen, q.shape[-1])
    meta["description"] = (f"{args.model or 'tiny ' + args.tiny}, layer {args.layer}: attention "
                           f"inputs as the model hands them (captured), padding as a key mask")
    case = {n: t.detach().contiguous() for n, t in (("q", q), ("k", k), ("v", v))}
    case["mask"] = (mask != 0)[:, None, None, :].contiguous()
    save_torch(case, args.output, metadata=meta)
    hf_path = args.output.removesuffix(".safetensors") + ".hf.safetensors"
    save_file({"out": out.transpose(1, 2).float().contiguous().numpy(),
               "attention_mask": mask.numpy().astype(np.int64)}, hf_path)
    print(f"wrote {args.output} (q {list(q.shape)}, k {list(k.shape)}, {q.dtype}; "
          f"{json.dumps(meta)}) and {hf_path}")
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            result = os.path.join(tmp, "out.safetensors")
            r = subprocess.run([args.check, "run", args.output, "-o", result],
                               capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"wgattn run failed: {r.stderr.strip()}")
            got = load_torch(result)["out"].double().numpy()
        want = out.transpose(1, 2).double().numpy()
        # Query rows that are padding: HF's eager attention gives them an average of v (its
        # mask holds the most negative finite value, not -inf) where a row sees no real key;
        # wgattn gives 0. Compare the real rows only.
        real = (mask != 0).numpy()[:, None, :, None]
        err = np.where(real, np.abs(got - want), 0.0)
        eps = {torch.float32: 2.0 ** -23, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}
        tol = 8 * eps[q.dtype] * (1.0 + np.abs(want))
        bad = err > tol + (4e-6 if q.dtype == torch.float32 else 0.0)
        print(f"check: largest |wgattn - model| on real query rows {err.max():.3g} "
              f"({'within' if not bad.any() else 'OVER'} 8 output ulps); "
              f"{int((~real).sum())} padding query rows not compared")
        return 1 if bad.any() else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
