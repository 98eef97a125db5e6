#!/usr/bin/env bash
# The fused decode kernel's two layouts on lavapipe by head dim and dtype (Lq=1, Lt=8192,
# H=32), interleaved in each round (release build). ROUNDS: 3 unless given. Every line is
# `wgattn bench --json` (device time in gpu_median_ms).
B=${B:-./target/release/wgattn}
run() { echo "\$ wgattn $*"; $B "$@"; }
for round in $(seq "${ROUNDS:-3}"); do
  for d in 64 96 128 256; do
    for dt in f32 f16 bf16; do
      for layout in key-per-invocation subgroup-keys; do
        run bench --path fused --q-heads 32 --q-len 1 --kv-len 8192 --head-dim $d --iters 5 --warmup 1 --dtype $dt --decode-layout $layout --json
      done
    done
  done
done
