// Replays wgattn execution plans (`wgattn plan`) with WebGPU and checks the results against
// the CPU reference's expected values carried in the plan. Plain JavaScript, no build step.
//
// A plan's shaders are WGSL as naga (wgpu) reads it; `prelude()` adds what Tint (Chrome's
// WGSL compiler) needs on top: `enable subgroups;` for shaders that use subgroup operations
// (naga 30 refuses that line, Tint requires it). `enable f16;` is in the source already.

/** Bytes of a base64 string (standard alphabet, padded). */
export function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** The lines Tint needs in front of a naga-flavoured shader. */
export function prelude(shader) {
  const features = shader.features || [];
  let lines = "";
  if (features.includes("subgroups") && !/^\s*enable\s+subgroups\s*;/m.test(shader.source)) {
    lines += "enable subgroups;\n";
  }
  return lines;
}

function f16ToF32(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Little-endian elements of `dtype` (f32, f16, bf16) as numbers. */
export function decode(bytes, dtype) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = [];
  if (dtype === "f32") {
    for (let i = 0; i + 4 <= bytes.byteLength; i += 4) out.push(view.getFloat32(i, true));
  } else if (dtype === "f16") {
    for (let i = 0; i + 2 <= bytes.byteLength; i += 2) out.push(f16ToF32(view.getUint16(i, true)));
  } else if (dtype === "bf16") {
    const word = new DataView(new ArrayBuffer(4));
    for (let i = 0; i + 2 <= bytes.byteLength; i += 2) {
      word.setUint32(0, view.getUint16(i, true) << 16);
      out.push(word.getFloat32(0));
    }
  } else {
    throw new Error(`unknown dtype ${dtype}`);
  }
  return out;
}

/** `|got - want| <= atol + rtol * |want|`; non-finite values must match in place. */
export function compare(got, want, atol, rtol) {
  let bad = 0, first = null, maxErr = 0;
  if (got.length !== want.length) {
    return { count: want.length, bad: want.length, maxErr: Infinity,
             first: `got ${got.length} elements, want ${want.length}` };
  }
  for (let i = 0; i < want.length; i++) {
    const g = got[i], w = want[i];
    let ok;
    if (Number.isFinite(g) && Number.isFinite(w)) {
      const err = Math.abs(g - w);
      maxErr = Math.max(maxErr, err);
      ok = err <= atol + rtol * Math.abs(w);
    } else {
      ok = (Number.isNaN(g) && Number.isNaN(w)) || g === w;
    }
    if (!ok) {
      bad++;
      if (first === null) first = `flat index ${i}: got ${g}, want ${w}`;
    }
  }
  return { count: want.length, bad, maxErr, first };
}

/** A device with the features and limits `plan` needs, or an Error saying what is missing. */
export async function requestDevice(plan) {
  if (!navigator.gpu) throw new Error("this browser has no WebGPU (navigator.gpu is missing)");
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error("navigator.gpu.requestAdapter() returned no adapter");
  const missing = (plan.required_features || []).filter((f) => !adapter.features.has(f));
  if (missing.length) throw new Error(`the adapter lacks ${missing.join(", ")}, which this plan uses`);
  // Kernels with subgroup operations may be specialized on the subgroup sizes the plan was
  // made for (`wgattn plan --subgroup-sizes`): an adapter outside them would compute garbage.
  const sizes = plan.subgroup_sizes;
  if ((plan.required_features || []).includes("subgroups") && sizes) {
    const [min, max] = [adapter.info.subgroupMinSize, adapter.info.subgroupMaxSize];
    if (!(min >= sizes[0] && max <= sizes[1])) {
      throw new Error(`the adapter's subgroup sizes are ${min} to ${max}; this plan is for ` +
        `${sizes[0]} to ${sizes[1]} (wgattn plan --subgroup-sizes)`);
    }
  }
  const requiredLimits = {};
  for (const [name, value] of Object.entries(plan.limits || {})) {
    if (!(name in adapter.limits)) continue;
    if (adapter.limits[name] < value) {
      throw new Error(`the adapter's ${name} is ${adapter.limits[name]}; this plan needs ${value}`);
    }
    requiredLimits[name] = value;
  }
  const requiredFeatures = [...(plan.required_features || [])];
  if (adapter.features.has("timestamp-query")) requiredFeatures.push("timestamp-query");
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  return { adapter, device };
}

const STAGE = () => GPUShaderStage.COMPUTE;

/**
 * Builds a case's shaders and pipelines. Compile failures (createShaderModule's compilation
 * messages, validation errors, pipeline errors) come back as strings, one per shader.
 */
async function build(device, c) {
  const errors = [];
  const pipelines = [];
  for (const shader of c.shaders) {
    const code = prelude(shader) + shader.source;
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ label: shader.label, code });
    const info = await module.getCompilationInfo();
    const scoped = await device.popErrorScope();
    const messages = info.messages
      .filter((m) => m.type === "error")
      .map((m) => `${m.lineNum}:${m.linePos}: ${m.message}`);
    if (messages.length || scoped) {
      errors.push(`${shader.label}: ${messages.join("; ") || scoped.message}`);
      pipelines.push(null);
      continue;
    }
    const layout = device.createBindGroupLayout({
      label: shader.label,
      entries: shader.bindings.map((b) => ({
        binding: b.binding, visibility: STAGE(), buffer: { type: b.type },
      })),
    });
    try {
      const pipeline = await device.createComputePipelineAsync({
        label: shader.label,
        layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: shader.entry_point },
      });
      pipelines.push({ pipeline, layout });
    } catch (e) {
      errors.push(`${shader.label}: ${e.message || e}`);
      pipelines.push(null);
    }
  }
  return { errors, pipelines };
}

/** f32 to f16 bits (round to nearest even; enough for values in [-1, 1)). */
function f32ToF16(x) {
  const f = new DataView(new ArrayBuffer(4));
  f.setFloat32(0, x);
  const bits = f.getUint32(0);
  const sign = (bits >>> 16) & 0x8000;
  const exp = ((bits >>> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return sign;
  if (exp >= 31) return sign | 0x7c00;
  let h = sign | (exp << 10) | ((bits >>> 13) & 0x3ff);
  const rest = bits & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
  return h;
}

/** `n` bytes of uniform values in [-1, 1) in `dtype`, from a seeded generator. */
function randomBytes(n, dtype) {
  let state = 0x9e3779b9;
  const next = () => {
    state ^= state << 13; state ^= state >>> 17; state ^= state << 5;
    return ((state >>> 0) / 2 ** 32) * 2 - 1;
  };
  const bytes = new Uint8Array(Math.ceil(n / 4) * 4);
  const view = new DataView(bytes.buffer);
  if (dtype === "f32") {
    for (let i = 0; i + 4 <= bytes.length; i += 4) view.setFloat32(i, next(), true);
  } else {
    for (let i = 0; i + 2 <= bytes.length; i += 2) {
      const x = next();
      const half = dtype === "f16" ? f32ToF16(x)
        : (() => { const f = new DataView(new ArrayBuffer(4)); f.setFloat32(0, x); return f.getUint32(0) >>> 16; })();
      view.setUint16(i, half, true);
    }
  }
  return bytes;
}

function createBuffers(device, c) {
  return c.buffers.map((b) => {
    let usage = 0;
    for (const name of b.usage) usage |= GPUBufferUsage[name];
    const buffer = device.createBuffer({ label: `buffer ${b.id}`, size: b.size, usage });
    let bytes = null;
    if (b.contents.kind === "bytes") bytes = fromBase64(b.contents.base64);
    if (b.contents.kind === "fill") bytes = new Uint8Array(b.size).fill(b.contents.byte);
    if (b.contents.kind === "random") bytes = randomBytes(b.contents.bytes, b.contents.dtype);
    if (bytes && bytes.length) {
      const padded = new Uint8Array(Math.ceil(bytes.length / 4) * 4);
      padded.set(bytes);
      device.queue.writeBuffer(buffer, 0, padded);
    }
    return buffer;
  });
}

/** Records every step of a case into one encoder; optional timestamps around it. */
function encode(device, c, built, buffers, timing) {
  const encoder = device.createCommandEncoder({ label: c.name });
  let first = true;
  const dispatches = c.steps.filter((s) => s.op === "dispatch").length;
  let seen = 0;
  for (const step of c.steps) {
    if (step.op === "copy") {
      encoder.copyBufferToBuffer(buffers[step.src], step.src_offset, buffers[step.dst],
                                 step.dst_offset, step.size);
      continue;
    }
    const { pipeline, layout } = built.pipelines[step.shader];
    const group = device.createBindGroup({
      label: step.label,
      layout,
      entries: step.bindings.map((r) => ({
        binding: r.binding, resource: { buffer: buffers[r.buffer], offset: r.offset, size: r.size },
      })),
    });
    seen++;
    const writes = {};
    if (timing && first) writes.beginningOfPassWriteIndex = 0;
    if (timing && seen === dispatches) writes.endOfPassWriteIndex = 1;
    first = false;
    const desc = { label: step.label };
    if (timing && Object.keys(writes).length) desc.timestampWrites = { querySet: timing.set, ...writes };
    const pass = encoder.beginComputePass(desc);
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(...step.workgroups);
    pass.end();
  }
  if (timing) {
    encoder.resolveQuerySet(timing.set, 0, 2, timing.resolve, 0);
    encoder.copyBufferToBuffer(timing.resolve, 0, timing.read, 0, 16);
  }
  return encoder.finish();
}

/** `size` bytes at `offset` of a buffer (mapped whole if it is MAP_READ, else copied out). */
async function readRange(device, buffer, offset, size) {
  if (buffer.usage & GPUBufferUsage.MAP_READ) {
    await buffer.mapAsync(GPUMapMode.READ);
    const bytes = new Uint8Array(buffer.getMappedRange().slice(offset, offset + size));
    buffer.unmap();
    return bytes;
  }
  const padded = Math.ceil(size / 4) * 4;
  const staging = device.createBuffer({
    size: padded, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, offset, staging, 0, padded);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const bytes = new Uint8Array(staging.getMappedRange().slice(0, size));
  staging.destroy();
  return bytes;
}

/**
 * Runs one case of a plan and checks its results. Returns
 * `{name, path, dtype, status, error, results}`, `status` one of `pass`, `mismatch`,
 * `compile_error`, `gpu_error`.
 */
export async function runCase(device, c) {
  const summary = { name: c.name, path: c.path, dtype: c.dtype, status: "pass", error: null,
                    results: [] };
  const built = await build(device, c);
  if (built.errors.length) {
    return { ...summary, status: "compile_error", error: built.errors.join(" | ") };
  }
  device.pushErrorScope("out-of-memory");
  device.pushErrorScope("validation");
  const buffers = createBuffers(device, c);
  device.queue.submit([encode(device, c, built, buffers, null)]);
  const validation = await device.popErrorScope();
  const oom = await device.popErrorScope();
  if (validation || oom) {
    buffers.forEach((b) => b.destroy());
    return { ...summary, status: "gpu_error", error: (validation || oom).message };
  }
  for (const r of c.results) {
    if (!r.expected) {
      summary.status = "unchecked";
      summary.error = "the plan carries no expected values (a benchmark plan: use mode=time)";
      break;
    }
    const bytes = await readRange(device, buffers[r.buffer], r.offset, r.size);
    const got = decode(bytes, r.dtype);
    if (r.name === "probs" || r.name === "logits") {
      summary.intermediates = summary.intermediates || {};
      summary.intermediates[r.name] = { shape: r.shape, values: got };
    }
    const want = decode(fromBase64(r.expected.base64), r.expected.dtype);
    const check = compare(got, want, r.atol, r.rtol);
    summary.results.push({ name: r.name, ...check });
    if (check.bad) {
      summary.status = "mismatch";
      summary.error = summary.error || `${r.name}: ${check.bad} of ${check.count} differ; first at ${check.first}`;
    }
  }
  buffers.forEach((b) => b.destroy());
  return summary;
}

/**
 * Times one case: `warmup` runs, then timed submissions until `minIters` are done and they
 * add up to `budgetMs`, or `maxIters` are done (`wgattn bench`'s rule). GPU time from
 * timestamp queries when the device has them (first pass begin to last pass end), else wall
 * time from submit to `onSubmittedWorkDone`. Returns milliseconds per run and the clock used.
 */
export async function timeCase(device, c,
                               { warmup = 2, minIters = 10, maxIters = 10, budgetMs = 0 } = {}) {
  const built = await build(device, c);
  if (built.errors.length) throw new Error(built.errors.join(" | "));
  const buffers = createBuffers(device, c);
  let timing = null;
  if (device.features.has("timestamp-query")) {
    timing = {
      set: device.createQuerySet({ type: "timestamp", count: 2 }),
      resolve: device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC }),
      read: device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }),
    };
  }
  const samples = [];
  let spent = 0;
  for (let i = 0; samples.length < maxIters && (samples.length < minIters || spent < budgetMs); i++) {
    const start = performance.now();
    device.queue.submit([encode(device, c, built, buffers, timing)]);
    await device.queue.onSubmittedWorkDone();
    let ms = performance.now() - start;
    if (timing) {
      await timing.read.mapAsync(GPUMapMode.READ);
      const [t0, t1] = new BigUint64Array(timing.read.getMappedRange().slice(0));
      timing.read.unmap();
      if (t1 > t0) ms = Number(t1 - t0) / 1e6;
    }
    if (i >= warmup) { samples.push(ms); spent += performance.now() - start; }
  }
  buffers.forEach((b) => b.destroy());
  if (timing) { timing.set.destroy(); timing.resolve.destroy(); timing.read.destroy(); }
  samples.sort((a, b) => a - b);
  const mid = samples.length >> 1;
  const median = samples.length % 2 ? samples[mid] : (samples[mid - 1] + samples[mid]) / 2;
  const bytes = c.buffers.reduce((sum, b) => sum + b.size, 0);
  return { samples, median, min: samples[0], max: samples[samples.length - 1], warmup, bytes,
           clock: timing ? "timestamp-query" : "wall" };
}

/**
 * The report `wgattn bench --compare` reads (format `wgattn-bench-report`), from a benchmark
 * plan (`wgattn bench --suite NAME --emit-plan`) and what `timeCase` measured per case
 * (`timed[name]`: a result or `{error}`). `gpu_bytes` is the plan's buffers.
 */
export function benchReport(plan, timed, adapter, clock) {
  const bench = plan.bench;
  const info = adapter.info || {};
  const name = [info.vendor, info.architecture, info.device, info.description]
    .filter((x) => x).join(" ") || "WebGPU adapter";
  const cases = plan.cases.map((c) => {
    const t = timed[c.name] || { error: "not run" };
    const base = { id: c.bench.id, group: c.bench.group, ...c.bench.request };
    if (t.error) return { ...base, status: "error", error: t.error, iters: 0, warmup: 0 };
    return { ...base, iters: t.samples.length, warmup: t.warmup, status: "ok",
             median_ms: t.median, min_ms: t.min, max_ms: t.max, dense_flops: c.bench.dense_flops,
             gflops: c.bench.dense_flops / (t.median * 1e6), gpu_bytes: t.bytes };
  });
  return {
    format: bench.format, format_version: bench.format_version,
    wgattn_version: bench.wgattn_version, suite: bench.suite,
    created_unix_s: Math.floor(Date.now() / 1000),
    host: { os: navigator.platform || "browser", arch: "wasm-free javascript" },
    adapter: { name, backend: `WebGPU (${clock})`, device_type: "Unknown",
               driver: navigator.userAgent, driver_info: info.description || "",
               vendor: 0, device: 0, features_used: plan.required_features || [] },
    iterations: bench.iterations,
    cases: [...cases, ...bench.unplanned],
  };
}

/** viridis, as a polynomial fit (the same as examples/embed.rs's colormap pass). */
export function viridis(t) {
  const c = [
    [0.2777, 0.0054, 0.3341], [0.1051, 1.4046, 1.3846], [-0.3309, 0.2148, 0.0951],
    [-4.6342, -5.7991, -19.3324], [6.2283, 14.1799, 56.6906], [4.7764, -13.7451, -65.3530],
    [-5.4355, 4.6459, 26.3124],
  ];
  return [0, 1, 2].map((ch) => {
    let x = c[6][ch];
    for (let k = 5; k >= 0; k--) x = c[k][ch] + t * x;
    return Math.round(Math.min(1, Math.max(0, x)) * 255);
  });
}

/**
 * Draws batch entry 0, head 0 of a case's probabilities (`intermediates.probs`, shape
 * `[B, H, Lq, Lt]`) on a canvas: keys across, queries down, viridis scaled to the largest
 * probability, masked positions (logit -inf, where the case returned logits) grey.
 * Returns `{canvas, masked, max}`.
 */
export function heatmap(intermediates, px = 6) {
  const probs = intermediates.probs;
  const [, , lq, lt] = probs.shape;
  const logits = intermediates.logits;
  const canvas = document.createElement("canvas");
  canvas.width = lt * px;
  canvas.height = lq * px;
  const g = canvas.getContext("2d");
  let max = 0;
  for (let i = 0; i < lq * lt; i++) max = Math.max(max, probs.values[i]);
  let masked = 0;
  for (let i = 0; i < lq; i++) {
    for (let j = 0; j < lt; j++) {
      const at = i * lt + j;
      const isMasked = logits && logits.values[at] === -Infinity;
      if (isMasked) masked++;
      const [r, gr, b] = isMasked ? [128, 128, 128] : viridis(max > 0 ? probs.values[at] / max : 0);
      g.fillStyle = `rgb(${r},${gr},${b})`;
      g.fillRect(j * px, i * px, px, px);
    }
  }
  return { canvas, masked, max };
}
