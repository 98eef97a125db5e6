#!/usr/bin/env bash
# The decode kernel's two layouts on the issue-3 decode target (Lq=1, Lt=8192, H=32, D=128),
# f32 and f16, beside the staged path, interleaved in each round (release build). ROUNDS: 5
# unless given. Every line is `wgattn bench --json`; `gpu_kernels[].variants` name the layout
# that ran (`lanes8`: a subgroup per key).
B=${B:-./target/release/wgattn}
run() { echo "\$ wgattn $*"; $B "$@"; }
for round in $(seq "${ROUNDS:-5}"); do
  for dt in f32 f16; do
    shape="--q-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --iters 5 --warmup 1 --dtype $dt --json"
    run bench --path staged $shape
    run bench --path fused --decode-layout key-per-invocation $shape
    run bench --path fused --decode-layout subgroup-keys $shape
  done
done
