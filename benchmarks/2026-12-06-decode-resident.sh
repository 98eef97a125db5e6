#!/usr/bin/env bash
# The issue-3 decode target (Lq=1, Lt=8192, H=32, D=128) on both paths, each as a whole call
# (K and V uploaded by every call, out read back) and with `--resident` (q, k, v uploaded once;
# each call records into a fresh encoder, submits and waits), f32 and f16, interleaved in each
# round (release build). ROUNDS: 5 unless given. Every line is `wgattn bench --json`.
B=${B:-./target/release/wgattn}
run() { echo "\$ wgattn $*"; $B "$@"; }
for round in $(seq "${ROUNDS:-5}"); do
  for dt in f32 f16; do
    shape="--q-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --iters 7 --warmup 1 --dtype $dt --json"
    for path in staged fused; do
      run bench --path $path $shape
      run bench --path $path $shape --resident
    done
  done
done
