#!/usr/bin/env python3
"""The issue-3 bench table on a real GPU, beside PyTorch's scaled_dot_product_attention.

Made for the device machine (python3 there has torch and safetensors; see
benchmarks/gpu/README.md for the one `run` call), and runnable here to check it before
spending device time: `--quick` on lavapipe, without torch (`--no-torch`) or with torch on the
CPU (`--torch-device cpu`: the torch half's code runs, its timings mean nothing).

What it does, in one process:
  1. `wgattn info`, and the card as nvidia-smi names it.
  2. The FP32 ceiling: an 8192^3 float32 matmul through torch with TF32 off (the "card's FP32
     rate" the issue's 40% goal is measured against), median of CUDA-event timings.
  3. Each case of the issue-3 table through `wgattn bench --json` on the paths given (wall
     median and device median from timestamp queries), and through torch SDPA on the same
     shapes and dtype with inputs already on the GPU (median of CUDA-event timings). The
     fused path also runs with `--resident` (q, k, v kept on the GPU: each call records,
     submits and waits, the wall-clock peer of SDPA's time), decode cases on staged too, and
     decode cases the decode layout the adapter does not choose (`fused+LAYOUT`).
  4. A cross-runtime check: seeded inputs written as a case file, run by `wgattn run --path
     fused`, compared with numpy and (with torch) SDPA, both in float64.
Every JSON line goes to OUT/table.jsonl; the Markdown table is printed last.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# name, wgattn bench arguments, paths, torch mask kind
CASES = [
    ("prefill L=2048 f32", "--q-heads 8 --q-len 2048 --head-dim 64", ["staged", "fused", "fused+resident"], "none"),
    ("prefill L=2048 f16", "--q-heads 8 --q-len 2048 --head-dim 64 --dtype f16", ["staged", "fused", "fused+resident"], "none"),
    ("prefill L=4096 f32", "--q-heads 8 --q-len 4096 --head-dim 64", ["fused", "fused+resident"], "none"),
    ("prefill L=4096 causal f32", "--q-heads 8 --q-len 4096 --head-dim 64 --causal", ["fused", "fused+resident"], "causal"),
    ("window 256 L=65536 f16", "--q-heads 1 --q-len 65536 --head-dim 64 --causal --window-left 256 --dtype f16", ["staged", "fused", "fused+resident"], "window256"),
    ("decode Lt=8192 f32", "--q-heads 32 --kv-heads 32 --q-len 1 --kv-len 8192 --head-dim 128", ["staged", "fused", "staged+resident", "fused+resident", "fused+key-per-invocation"], "none"),
    ("decode Lt=8192 f16", "--q-heads 32 --kv-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --dtype f16", ["staged", "fused", "staged+resident", "fused+resident", "fused+key-per-invocation"], "none"),
    ("decode GQA 32/8 Lt=8192 f32", "--q-heads 32 --kv-heads 8 --q-len 1 --kv-len 8192 --head-dim 128", ["staged", "fused", "fused+resident", "fused+key-per-invocation"], "none"),
    # Short query blocks: a GPU takes the prefill kernel past 4 rows (CPU adapters the decode
    # kernel up to 128); the other kernel beside it says which a GPU should take.
    ("short block Lq=16 GQA 32/8 Lt=8192 f32", "--q-heads 32 --kv-heads 8 --q-len 16 --kv-len 8192 --head-dim 128", ["staged", "fused", "fused+decode-max-q=128"], "none"),
    ("short block Lq=7 Lt=4096 f16", "--q-heads 32 --kv-heads 32 --q-len 7 --kv-len 4096 --head-dim 128 --dtype f16", ["fused", "fused+decode-max-q=128"], "none"),
]
# Small shapes for a check on a CPU adapter.
QUICK = [
    ("prefill L=256 f32", "--q-heads 2 --q-len 256 --head-dim 64", ["staged", "fused"], "none"),
    ("prefill L=256 causal f16", "--q-heads 2 --q-len 256 --head-dim 64 --causal --dtype f16", ["fused"], "causal"),
    ("window 16 L=1024 f16", "--q-heads 1 --q-len 1024 --head-dim 64 --causal --window-left 16 --dtype f16", ["fused"], "window16"),
    ("decode Lt=1024 f32", "--q-heads 4 --kv-heads 4 --q-len 1 --kv-len 1024 --head-dim 128", ["staged", "fused", "staged+resident", "fused+resident", "fused+subgroup-keys"], "none"),
    ("short block Lq=7 Lt=1024 f32", "--q-heads 4 --kv-heads 2 --q-len 7 --kv-len 1024 --head-dim 64", ["fused", "fused+decode-max-q=4"], "none"),
]
# A path "PATH+resident" is PATH with `--resident`. A path "fused+LAYOUT" is the fused path with
# `--decode-layout LAYOUT`: the decode layout the adapter does not choose itself (a GPU takes a
# subgroup per key, a CPU adapter a key per invocation), timed beside its default. A path
# "fused+decode-max-q=N" is the fused path with `--tuning decode-max-q=N`: the other kernel for
# a short query block (N=128: the decode kernel on a GPU; N=4: the prefill kernel on a CPU).


def shape_of(rec):
    """B, Hq, Hkv, Lq, Lt, D, Dv, dtype as `wgattn bench --json` echoes them (also in its
    error objects), so the torch side times exactly the shape wgattn ran."""
    keys = dict(b="batch", hq="q_heads", hkv="kv_heads", lq="q_len", lt="kv_len", d="head_dim", dv="v_dim", dtype="dtype")
    return {k: rec[v] for k, v in keys.items()}


def dense_flops(s):
    return 2.0 * s["b"] * s["hq"] * s["lq"] * s["lt"] * (s["d"] + s["dv"])


def wgattn_bench(exe, args, path, iters, warmup):
    path, _, variant = path.partition("+")
    if variant == "resident":
        extra = ["--resident"]
    elif variant.startswith("decode-max-q="):
        extra = ["--tuning", variant]
    else:
        extra = ["--decode-layout", variant] if variant else []
    cmd = [exe, "bench", "--path", path, *args.split(), *extra, "--iters", str(iters), "--warmup", str(warmup), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    line = next((l for l in r.stdout.splitlines() if l.startswith("{")), None)
    rec = json.loads(line) if line else {"error": (r.stderr.strip() or "no output").splitlines()[-1]}
    rec["command"] = " ".join(cmd)
    return rec


def torch_mask(torch, kind, lq, lt, device):
    """None for no mask; True where attention is allowed (SDPA's boolean convention)."""
    if kind == "none":
        return None, False
    if kind == "causal":
        return None, True
    w = int(kind.removeprefix("window"))
    i = torch.arange(lq, device=device).view(-1, 1) + (lt - lq)
    j = torch.arange(lt, device=device).view(1, -1)
    return (j <= i) & (j >= i - w), False


def elapsed_ms(torch, device, f):
    """The time of `f()` in ms: CUDA events on a GPU, the wall clock on the CPU."""
    if device != "cuda":
        t0 = time.perf_counter()
        f()
        return (time.perf_counter() - t0) * 1e3
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    f()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b)


def torch_time(torch, F, s, kind, iters, warmup, device):
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[s["dtype"]]
    g = torch.Generator(device=device).manual_seed(1)
    q = torch.randn(s["b"], s["hq"], s["lq"], s["d"], device=device, dtype=dt, generator=g)
    k = torch.randn(s["b"], s["hkv"], s["lt"], s["d"], device=device, dtype=dt, generator=g)
    v = torch.randn(s["b"], s["hkv"], s["lt"], s["dv"], device=device, dtype=dt, generator=g)
    mask, causal = torch_mask(torch, kind, s["lq"], s["lt"], device)
    gqa = s["hq"] != s["hkv"]
    run = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=gqa)
    for _ in range(warmup):
        run()
    return statistics.median(elapsed_ms(torch, device, run) for _ in range(iters))


def fp32_ceiling(torch, device):
    torch.backends.cuda.matmul.allow_tf32 = False
    n = 8192 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    ms = statistics.median(elapsed_ms(torch, device, lambda: a @ b) for _ in range(10))
    return 2.0 * n**3 / (ms * 1e-3)


def reference(q, k, v, causal):
    """SDPA in float64 with numpy: softmax(q k^T / sqrt(D), causal bottom-right) v."""
    import numpy as np

    s = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(q.shape[-1])
    if causal:
        lq, lt = s.shape[-2:]
        allowed = np.arange(lt)[None, :] <= np.arange(lq)[:, None] + (lt - lq)
        s = np.where(allowed, s, -np.inf)
    s = np.exp(s - s.max(axis=-1, keepdims=True))
    return np.einsum("bhij,bhjd->bhid", s / s.sum(axis=-1, keepdims=True), v)


def cross_check(torch, F, exe, out_dir, device):
    """Seeded inputs through wgattn's fused path, against numpy in float64 and (with torch)
    SDPA in float64 on the same inputs."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    rows = []
    rng = np.random.default_rng(7)
    for name, (b, h, lq, lt, d), causal in [
        ("prefill causal B=2 H=4 L=77 D=64", (2, 4, 77, 77, 64), True),
        ("decode H=8 Lt=1000 D=128", (1, 8, 1, 1000, 128), False),
    ]:
        q = (rng.standard_normal((b, h, lq, d)) * 2).astype(np.float32)
        k = (rng.standard_normal((b, h, lt, d)) * 2).astype(np.float32)
        v = rng.standard_normal((b, h, lt, d)).astype(np.float32)
        case = os.path.join(out_dir, "case.safetensors")
        res = os.path.join(out_dir, "result.safetensors")
        save_file({"q": q, "k": k, "v": v}, case)
        flags = ["--causal"] if causal else []
        r = subprocess.run([exe, "run", case, "-o", res, "--path", "fused", *flags], capture_output=True, text=True)
        if r.returncode != 0:
            rows.append({"cross_check": name, "error": r.stderr.strip()})
            continue
        got = load_file(res)["out"].astype(np.float64)
        wants = {"numpy": reference(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), causal)}
        if torch is not None:
            t = [torch.from_numpy(x).double().to(device) for x in (q, k, v)]
            wants["torch"] = F.scaled_dot_product_attention(*t, is_causal=causal).cpu().numpy()
        row = {"cross_check": name}
        for who, want in wants.items():
            row[f"rel_error_vs_{who}"] = float(np.linalg.norm(got - want) / np.linalg.norm(want))
            row[f"max_abs_vs_{who}"] = float(np.abs(got - want).max())
        rows.append(row)
    return rows


def arguments(doc, out):
    """The options every script here takes: the binary, where to write (`$OUT` on the device
    machine, else `out`), iterations, and small shapes for a CPU adapter."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wgattn", default="./target/release/wgattn")
    ap.add_argument("--out", default=os.environ.get("OUT", out))
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small shapes (a CPU adapter)")
    return ap


def main():
    ap = arguments(__doc__, "/tmp/wgattn-gpu-table")
    ap.add_argument("--no-torch", action="store_true", help="wgattn only")
    ap.add_argument("--torch-device", default="cuda",
                    help="cpu: run the torch half on the CPU, to check the script (timings mean nothing)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "table.jsonl"), "w")

    def emit(rec):
        log.write(json.dumps(rec) + "\n")
        log.flush()

    torch = F = None
    if not a.no_torch:
        import torch
        import torch.nn.functional as F

        if a.torch_device == "cuda" and not torch.cuda.is_available():
            sys.exit("torch sees no CUDA device (use --no-torch, or --torch-device cpu for a check)")
    info = subprocess.run([a.wgattn, "info"], capture_output=True, text=True)
    print(info.stdout + info.stderr, flush=True)
    emit({"wgattn_info": info.stdout, "stderr": info.stderr})
    if info.returncode != 0:
        sys.exit("wgattn info failed: no adapter?")
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm", "--format=csv"],
                         capture_output=True, text=True) if torch and a.torch_device == "cuda" else None
    if smi is not None:
        emit({"nvidia_smi": smi.stdout})
        print(smi.stdout, flush=True)
    ceiling = None
    if torch is not None:
        ceiling = fp32_ceiling(torch, a.torch_device)
        emit({"fp32_matmul_flops": ceiling, "torch_device": a.torch_device})
        print(f"FP32 ceiling (square matmul, TF32 off, {a.torch_device}): {ceiling / 1e12:.3f} TFLOP/s", flush=True)

    table = []
    for name, args, paths, kind in QUICK if a.quick else CASES:
        row = {"case": name}
        for path in paths:
            t0 = time.time()
            rec = wgattn_bench(a.wgattn, args, path, a.iters, a.warmup)
            rec["case"] = name
            emit(rec)
            row[path] = rec
            print(f"{name} {path}: {rec.get('median_ms', rec.get('error'))} ({time.time() - t0:.0f} s)", flush=True)
        if "batch" not in rec:
            sys.exit(f"{name}: wgattn bench printed no shape: {rec}")
        s = shape_of(rec)
        row["flops"] = dense_flops(s)
        if torch is not None:
            try:
                ms = torch_time(torch, F, s, kind, a.iters, a.warmup, a.torch_device)
                row["torch_ms"] = ms
                emit({"case": name, "path": "torch-sdpa", "median_ms": ms, "torch": torch.__version__,
                      "torch_device": a.torch_device})
            except Exception as e:  # out of memory, unsupported mask: say so in the table
                row["torch_error"] = str(e).splitlines()[0]
                emit({"case": name, "path": "torch-sdpa", "error": row["torch_error"]})
            if a.torch_device == "cuda":
                torch.cuda.empty_cache()
        table.append(row)

    checks = cross_check(torch, F, a.wgattn, a.out, a.torch_device)
    for c in checks:
        emit(c)

    def cell(rec):
        if rec is None:
            return ""
        if "error" in rec:
            return "refused" if "exceeds limit" in rec["error"] else "error: " + rec["error"][:60]
        dev = rec.get("gpu_median_ms")
        return f"{rec['median_ms']:.2f} / {dev:.3f}" if dev else f"{rec['median_ms']:.2f} / -"

    print("\n| case | staged wall / device ms | fused wall / device ms | staged / fused resident ms | fused device TFLOP/s (dense) | % of FP32 ceiling | torch SDPA ms | fused device / torch | fused resident / torch | other decode layout or kernel wall / device ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in table:
        f = row.get("fused")
        dev = f.get("gpu_median_ms") if f and "error" not in f else None
        rate = row["flops"] / (dev * 1e-3) if dev else None
        pct = f"{100 * rate / ceiling:.1f}%" if rate and ceiling else ""
        tms = row.get("torch_ms")
        ratio = f"{dev / tms:.2f}x" if dev and tms else ""
        other = next((row[p] for p in row if isinstance(p, str) and p.startswith("fused+") and p != "fused+resident"), None)
        resident = [row.get(p) for p in ("staged+resident", "fused+resident")]
        res_ms = [r["median_ms"] if r and "error" not in r else None for r in resident]
        res_cell = " / ".join(f"{m:.3f}" if m else ("-" if r is None else "error") for m, r in zip(res_ms, resident))
        res_ratio = f"{res_ms[1] / tms:.2f}x" if res_ms[1] and tms else ""
        print(f"| {row['case']} | {cell(row.get('staged'))} | {cell(f)} | {res_cell} | {rate / 1e12 if rate else 0:.3f} | {pct} | "
              f"{f'{tms:.3f}' if tms else row.get('torch_error', '')} | {ratio} | {res_ratio} | {cell(other)} |")
    for c in checks:
        print(f"cross-check {c}")


if __name__ == "__main__":
    main()
