#!/usr/bin/env bash
# The issue-3 decode target alone (f32, Lq=1, Lt=8192, H=32, D=128), staged and fused in
# turn, whole call and resident, ROUNDS rounds (6 unless given): for a host whose run-to-run
# spread is wide. Every line is `wgattn bench --json`.
B=${B:-./target/release/wgattn}
run() { echo "\$ wgattn $*"; $B "$@"; }
for round in $(seq "${ROUNDS:-6}"); do
  for mode in "" --resident; do
    for path in staged fused; do
      run bench --path $path --q-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --iters 5 \
        --warmup 1 --dtype f32 --json $mode
    done
  done
done
