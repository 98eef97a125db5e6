#!/usr/bin/env python3
"""Are the engine's tile choices right on this GPU? A sweep of `wgattn bench --tuning`.

The issue-3 goal cases, fused path only, f32: prefill (B=1, H=8, L=2048, D=64) over keys per
tile and query rows per invocation, and decode (H=32, Lq=1, Lt=8192, D=128) over the decode
kernel's workgroup size and layout, each beside the engine's own choice (`auto`). Prints a
Markdown table of device medians (timestamp queries) and the dense rate
`2·B·Hq·Lq·Lt·(D+Dv)`, and writes every `wgattn bench --json` line to OUT/sweep.jsonl.
`--quick` takes small shapes, to check the script on a CPU adapter first:

    WGPU_BACKEND=vulkan python3 benchmarks/gpu/sweep.py --quick --iters 2 --warmup 1
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from table import arguments, dense_flops, shape_of, wgattn_bench  # noqa: E402

PREFILL = "--q-heads 8 --q-len 2048 --head-dim 64"
DECODE = "--q-heads 32 --kv-heads 32 --q-len 1 --kv-len 8192 --head-dim 128"
QUICK_PREFILL = "--q-heads 2 --q-len 256 --head-dim 64"
QUICK_DECODE = "--q-heads 4 --kv-heads 4 --q-len 1 --kv-len 1024 --head-dim 128"
GQA = "--q-heads 32 --kv-heads 8 --q-len 1 --kv-len 8192 --head-dim 128"
QUICK_GQA = "--q-heads 8 --kv-heads 2 --q-len 1 --kv-len 1024 --head-dim 128"


def grid(quick):
    """(case, bench arguments, tuning list or None for the engine's choice)."""
    prefill, decode, gqa = (QUICK_PREFILL, QUICK_DECODE, QUICK_GQA) if quick else (PREFILL, DECODE, GQA)
    runs = [("prefill", prefill, None)]
    runs += [("prefill", prefill, f"keys-per-tile={k},rows-per-invocation={r}")
             for k in (16, 32, 64) for r in (1, 2, 4)]
    runs += [("decode", decode, None)]
    runs += [("decode", decode, f"decode-invocations={n},decode-layout={layout}")
             for n in (32, 64, 128, 256) for layout in ("subgroup-keys", "key-per-invocation")]
    # A GQA group's four query heads: one, two or all four per workgroup sharing each key,
    # in both decode layouts.
    runs += [("decode gqa", gqa, None)]
    runs += [("decode gqa", gqa, f"decode-layout={layout},decode-rows={r}")
             for layout in ("subgroup-keys", "key-per-invocation") for r in (1, 2, 4)]
    return runs


def main():
    a = arguments(__doc__, "/tmp/wgattn-gpu-sweep").parse_args()
    os.makedirs(a.out, exist_ok=True)
    rows = []
    with open(os.path.join(a.out, "sweep.jsonl"), "w") as log:
        for case, args, tuning in grid(a.quick):
            full = f"{args} --tuning {tuning}" if tuning else args
            rec = wgattn_bench(a.wgattn, full, "fused", a.iters, a.warmup)
            rec["case"], rec["tuning"] = case, tuning or "auto"
            log.write(json.dumps(rec) + "\n")
            log.flush()
            rows.append(rec)
            print(f"{case} {rec['tuning']}: {rec.get('gpu_median_ms', rec.get('error'))}", flush=True)
    print("\n| case | tuning | kernel variants | device ms | dense TFLOP/s |")
    print("|---|---|---|---|---|")
    for rec in rows:
        if "error" in rec:
            print(f"| {rec['case']} | {rec['tuning']} | error: {rec['error'][:80]} | | |")
            continue
        dev = rec.get("gpu_median_ms")
        rate = dense_flops(shape_of(rec)) / (dev * 1e-3) / 1e12 if dev else 0.0
        variants = "; ".join(v for k in rec.get("gpu_kernels", []) for v in k.get("variants", [])
                             if "combine" not in v)
        print(f"| {rec['case']} | {rec['tuning']} | {variants} | {dev or 0:.3f} | {rate:.3f} |")


if __name__ == "__main__":
    main()
