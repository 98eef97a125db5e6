"""What the oracle checks share: case and result files (safetensors, written and read by
hand: numpy has no bfloat16), the float dtypes, the comparisons and running `wgattn`."""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import tempfile

import numpy as np

# ---------------------------------------------------------------------------------------------
# safetensors, by hand (numpy has no bfloat16; the format is a length, a JSON header, bytes)

ST_DTYPES = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2), "BOOL": ("u1", 1),
             "I64": ("<i8", 8), "I32": ("<i4", 4), "U32": ("<u4", 4)}


def write_safetensors(path, tensors, metadata):
    """tensors: name -> (safetensors dtype, shape, bytes)."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def read_safetensors(path):
    """name -> float64 array (BF16 widened exactly), and "__metadata__" -> the metadata."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            out[name] = info
            continue
        begin, end = info["data_offsets"]
        np_dtype, _ = ST_DTYPES[info["dtype"]]
        a = np.frombuffer(body[begin:end], dtype=np_dtype).reshape(info["shape"])
        out[name] = widen(a, info["dtype"])
    return out


def widen(a, dtype):
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return a.astype(np.float64)


def to_bf16_bits(x):
    """Round f32 values to bfloat16 (nearest, ties to even), as their 16-bit patterns."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


class Float:
    """One float dtype: how to store values in it and read back what was stored."""

    def __init__(self, name):
        self.name = name
        self.st = {"f32": "F32", "f16": "F16", "bf16": "BF16"}[name]

    def encode(self, x):
        """(bytes, the stored values as float64)."""
        if self.name == "f32":
            a = np.asarray(x, dtype="<f4")
        elif self.name == "f16":
            a = np.asarray(x, dtype="<f2")
        else:
            a = to_bf16_bits(x).astype("<u2")
        return a.tobytes(), widen(a, self.st)

    @property
    def eps(self):
        return {"f32": 2.0 ** -23, "f16": 2.0 ** -10, "bf16": 2.0 ** -7}[self.name]


# ---------------------------------------------------------------------------------------------
# random cases


def random_case(rng, index, extra=None):
    """The options of a random case, as every oracle check draws them; `extra(rng, c)` draws a
    check's own options after these (before the seed of the case's values)."""
    c = {}
    c["dtype"] = str(rng.choice(["f32", "f32", "f16", "bf16"]))
    c["B"] = int(rng.integers(1, 4))
    c["Hkv"] = int(rng.choice([1, 2]))
    c["Hq"] = c["Hkv"] * int(rng.choice([1, 2, 4]))
    c["Lq"] = int(rng.choice([1, 1, 2, 3, 5, 7, 9, 17]))
    c["Lk"] = int(rng.integers(1, 41))
    c["P"] = 0 if rng.random() < 0.6 else int(rng.integers(1, 21))
    # Head sizes: multiples of 4 and 8 (the vec4/vec8 loads) and odd ones (the element-wise
    # loads and the packed half-precision tails).
    c["D"] = int(rng.choice([4, 8, 12, 16, 32, 64, 80, 1, 3, 5, 13, 36]))
    c["Dv"] = c["D"] if rng.random() < 0.6 else int(rng.choice([4, 8, 12, 20, 1, 7, 10]))
    c["layout"] = str(rng.choice(["bhsd", "bshd"]))
    c["causal"] = bool(rng.random() < 0.4)
    c["kv_lengths"] = c["P"] == 0 and rng.random() < 0.3
    c["window"] = rng.random() < 0.25
    c["left"] = int(rng.choice([-1, 0, 1, 3, 8])) if c["window"] else -1
    c["right"] = int(rng.choice([-1, 0, 2, 4])) if c["window"] else -1
    c["softcap"] = float(rng.choice([0.0, 0.0, 0.0, 0.0, 5.0, 20.0]))
    c["scale"] = None if rng.random() < 0.7 else float(rng.uniform(0.05, 2.0))
    c["large"] = bool(rng.random() < 0.15)
    c["mask"] = str(rng.choice(["none", "none", "bool", "additive"]))
    if rng.random() < 0.15:
        # Long: many key tiles, decode splits and the combine pass.
        c["B"], c["Hkv"], c["Hq"] = 1, 1, int(rng.choice([1, 2]))
        c["Lq"] = int(rng.choice([1, 2, 4, 33, 70]))
        c["Lk"] = int(rng.integers(200, 1300))
    if extra:
        extra(rng, c)
    c["seed"] = int(rng.integers(0, 2 ** 31))
    c["index"] = index
    return c


def describe(c, x):
    """The case's options in words (a list: a check adds its own)."""
    parts = [c["dtype"], f"B{c['B']} Hq{c['Hq']} Hkv{c['Hkv']} Lq{c['Lq']} Lk{c['Lk']} P{c['P']}",
             f"D{c['D']} Dv{c['Dv']}", c["layout"]]
    if c["causal"]:
        parts.append("causal")
    if c["kv_lengths"]:
        parts.append("kv_lengths")
    if c["window"]:
        parts.append(f"window({c['left']},{c['right']})")
    if c["softcap"]:
        parts.append(f"softcap {c['softcap']}")
    if c["scale"] is not None:
        parts.append(f"scale {c['scale']:.3f}")
    if c["large"]:
        parts.append("large logits")
    if c["mask"] != "none":
        parts.append(f"{c['mask']} mask {tuple(x['mask'].shape)}")
    return parts


def build_inputs(c, rng):
    """The case's tensors (name -> (safetensors dtype, shape, bytes)), what the oracles get (the
    stored values: float64 in bhsd, bool masks as bool, key lengths as int64) and the options
    as case-file metadata."""
    f = Float(c["dtype"])
    B, Hq, Hkv, Lq, Lk, P, D, Dv = (c[k] for k in ("B", "Hq", "Hkv", "Lq", "Lk", "P", "D", "Dv"))
    Lt = P + Lk
    tensors, oracle = {}, {}

    def float_tensor(name, shape, scale=1.0, bshd=False):
        """Random values of `shape` (bhsd), stored [B, S, H, D] when `bshd`; the oracle gets
        the stored values in bhsd."""
        x = rng.standard_normal(shape) * scale
        order = (0, 2, 1, 3) if bshd else (0, 1, 2, 3)
        data, stored = f.encode(np.transpose(x, order))
        stored_shape = tuple(shape[i] for i in order)
        tensors[name] = (f.st, stored_shape, data)
        oracle[name] = np.transpose(stored.reshape(stored_shape), order)

    bshd = c["layout"] == "bshd"
    float_tensor("q", (B, Hq, Lq, D), 20.0 if c["large"] else 1.0, bshd)
    float_tensor("k", (B, Hkv, Lk, D), 1.0, bshd)
    float_tensor("v", (B, Hkv, Lk, Dv), 1.0, bshd)
    if P:
        float_tensor("past_k", (B, Hkv, P, D))
        float_tensor("past_v", (B, Hkv, P, Dv))
    if c["kv_lengths"]:
        lens = rng.integers(0, Lt + 1, size=B).astype("<i8")
        if B > 1 and rng.random() < 0.5:
            lens[0] = Lt
        tensors["kv_lengths"] = ("I64", (B,), lens.tobytes())
        oracle["kv_lengths"] = lens
    if c["mask"] != "none":
        rank = int(rng.integers(1, 5))
        full = [B, Hq, Lq, Lt][4 - rank:]
        shape = [d if rng.random() < 0.6 else 1 for d in full[:-1]]
        n = Lt if rng.random() < 0.7 else int(rng.integers(1, Lt + 1))
        shape = tuple(shape + [n])
        if c["mask"] == "bool":
            m = rng.random(shape) < 0.75
            if m.ndim >= 2 and rng.random() < 0.5:
                m[..., 0, :] = False  # a row no key may see
            tensors["mask"] = ("BOOL", shape, m.astype(np.uint8).tobytes())
            oracle["mask"] = m
        else:
            mf = Float(str(rng.choice(["f32", c["dtype"]])))
            x = rng.standard_normal(shape) * 2.0
            x[rng.random(shape) < 0.2] = -np.inf
            data, stored = mf.encode(x)
            tensors["mask"] = (mf.st, shape, data)
            oracle["mask"] = stored.reshape(shape)
    meta = {"layout": c["layout"], "causal": "true" if c["causal"] else "false"}
    if c["window"]:
        meta["window_left"] = str(c["left"])
        meta["window_right"] = str(c["right"])
    if c["softcap"]:
        meta["softcap"] = repr(c["softcap"])
    if c["scale"] is not None:
        meta["scale"] = repr(c["scale"])
    return tensors, oracle, meta

# ---------------------------------------------------------------------------------------------
# running wgattn and comparing


def random_tuning(rng):
    """A `wgattn run --tuning` list: small tiles and splits, the other decode layout, other
    query rows per decode workgroup, the fallbacks without shader-f16 or subgroups; the
    results must not change."""
    items = [f"keys-per-tile={rng.choice([4, 8, 12, 20])}",
             f"rows-per-invocation={rng.choice([1, 2, 3, 4])}",
             f"decode-max-q={rng.choice([1, 4, 9, 17, 70])}",
             f"decode-keys-per-split={rng.choice([16, 48, 64, 200])}",
             f"decode-invocations={rng.choice([4, 16, 64, 128])}",
             f"decode-layout={rng.choice(['subgroup-keys', 'key-per-invocation'])}",
             f"decode-rows={rng.choice([1, 2, 3, 4, 8, 16])}"]
    if rng.random() < 0.3:
        items.append("shader-f16=off")
    if rng.random() < 0.3:
        items.append("subgroups=off")
    return ",".join(items)


def run_wgattn(binary, case, path, returns, out_path, tuning=None):
    cmd = [binary, "run", case, "-o", out_path, "--path", path]
    if path != "reference":
        cmd.append("--poison")
    if tuning:
        cmd += ["--tuning", tuning]
    if returns:
        cmd += ["--return", "scores,logits,probs"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        said = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:]
        return None, said or [f"exit status {r.returncode}, no output"]
    return read_safetensors(out_path), None


# The largest |error| / bound met by a passing comparison, reported per run: how close to its
# tolerance each path came.
WORST = [0.0]


def compare(name, got, want, tol, bshd=False):
    """None when `got` meets `want`, else a message. Infinities and exact zeros must match."""
    if bshd:
        got = np.transpose(got, (0, 2, 1, 3))
    if got.shape != want.shape:
        return f"{name}: shape {got.shape}, expected {want.shape}"
    if np.isnan(want).any():
        return f"{name}: the oracle holds NaN (a case outside the contract)"
    if np.isnan(got).any():
        return f"{name}: NaN at {np.argwhere(np.isnan(got))[0].tolist()}"
    inf = np.isinf(want)
    if (np.isinf(got) != inf).any() or (got[inf] != want[inf]).any():
        bad = np.argwhere((np.isinf(got) != inf) | (inf & (got != want)))[0].tolist()
        return f"{name}: infinity mismatch at {bad}: got {got[tuple(bad)]}, expected {want[tuple(bad)]}"
    finite = ~inf
    err = np.abs(got[finite] - want[finite])
    bound = tol * (1.0 + np.abs(want[finite]))
    if err.size and tol > 0:
        WORST[0] = max(WORST[0], float((err / bound).max()))
    if (err > bound).any():
        i = int(np.argmax(err - bound))
        where = np.argwhere(finite)[i].tolist()
        return (f"{name}: |error| {err[i]:.3g} at {where} (got {got[tuple(where)]:.6g}, "
                f"expected {want[tuple(where)]:.6g}, bound {bound[i]:.3g})")
    return None


def zero_rows(out, fully_masked):
    """A fully masked row must be exactly 0."""
    rows = out[fully_masked]
    if rows.size and (rows != 0).any():
        return "a fully masked row is not exactly 0"
    return None


# ---------------------------------------------------------------------------------------------
# a check's options and report


def arguments(doc):
    """The options every oracle check takes (a check adds its own)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--wgattn", default="target/debug/wgattn", help="the wgattn binary")
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--paths", default="reference,staged,fused,auto",
                    help="comma-separated: reference, staged, fused, auto")
    ap.add_argument("--tunings", type=int, default=1,
                    help="also run the fused path under this many random --tuning lists a case")
    ap.add_argument("--quiet", action="store_true",
                    help="print only the failures and the summary")
    ap.add_argument("--self-check", action="store_true",
                    help="give the oracle a scale 0.3%% off and succeed only if at least a quarter "
                         "of the comparisons fail (a check that they can fail)")
    ap.add_argument("--keep", help="write the case and result files here (else a temporary dir)")
    return ap


def run_paths(args, rng, case, directory, index, report, reference=True):
    """Runs `case` on each path of `--paths` (the reference only if `reference`) and on the
    fused path under `--tunings` random tuning lists; yields (label, whether the run returned
    the intermediates, result or None, error or None) for each."""
    runs = [(p, None) for p in args.paths.split(",") if reference or p != "reference"]
    runs += [("fused", random_tuning(rng)) for _ in range(args.tunings)]
    for n, (path, tuning) in enumerate(runs):
        returns = path in ("staged", "reference")
        result, error = run_wgattn(args.wgattn, case, path, returns,
                                   os.path.join(directory, f"result{index}-{n}.safetensors"),
                                   tuning)
        report.ran(result)
        yield (f"fused --tuning {tuning}" if tuning else path), returns, result, error


def case_directory(args, prefix):
    directory = args.keep or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(directory, exist_ok=True)
    return directory


class Report:
    """Counts and prints the comparisons of a run: each case's title (with `--quiet` only
    before its first failure), each comparison, the adapter, the largest error of a passing
    comparison as a share of its bound, and the verdict."""

    def __init__(self, args):
        self.quiet, self.self_check = args.quiet, args.self_check
        self.checks = self.failures = 0
        self.worst = 0.0
        self.adapter = None
        self.title = None

    def case(self, title):
        self.title = title
        if not self.quiet:
            print(title)

    def ran(self, result):
        """Notes the adapter a result names."""
        if result and "adapter" in result["__metadata__"] and not self.adapter:
            meta = result["__metadata__"]
            self.adapter = f"{meta['adapter']} ({meta.get('backend', '?')})"
            if not self.quiet:
                print(f"  (GPU paths on {self.adapter})")

    def compared(self, label, oracle, problems):
        """One comparison: `problems` from `compare`, empty when it passed (WORST[0] then holds
        its largest error as a share of the bound)."""
        self.checks += 1
        if not problems:
            self.worst = max(self.worst, WORST[0])
            if not self.quiet:
                print(f"  {label} vs {oracle}: ok (largest error {WORST[0]:.2g} of its bound)")
            return
        self.failures += 1
        if self.self_check and self.quiet:
            return  # expected: only the count matters
        if self.quiet and self.title:
            print(self.title)
            self.title = None
        print(f"  {label} vs {oracle}: FAIL: " + "; ".join(problems))

    def verdict(self, agree):
        """The summary line and the exit status; `agree` says with what, after "agree with"."""
        if self.self_check:
            # A case whose keys all get the same weight (one key, fully masked rows) or whose
            # tolerance is coarse (bf16, large logits) cannot show a 0.3% error: about half
            # of them; a blind comparison catches none.
            caught = self.failures >= self.checks // 4
            print(f"self-check: {self.failures} of {self.checks} comparisons caught a 0.3% error "
                  f"in the oracle's scale "
                  f"({'as they should' if caught else 'too few: the check is blind'})")
            return 0 if caught else 1
        print(f"{self.checks - self.failures}/{self.checks} comparisons agree with {agree}, the "
              f"largest error {self.worst:.2g} of its bound; GPU paths on {self.adapter}")
        return 1 if self.failures else 0
