#!/usr/bin/env bash
# The issue-3 target table, five decode rounds (8a50487, release build; session 7, AVX-512 host).
B=${B:-./target/release/wgattn}
run() { echo "\$ wgattn $*"; $B "$@"; }
run bench --path staged --q-heads 8 --q-len 2048 --head-dim 64 --iters 1 --warmup 1 --json
run bench --path fused  --q-heads 8 --q-len 2048 --head-dim 64 --iters 3 --warmup 1 --json
run bench --path fused  --q-heads 8 --q-len 4096 --head-dim 64 --iters 1 --warmup 1 --json
run bench --path fused  --q-heads 8 --q-len 4096 --head-dim 64 --causal --iters 1 --warmup 1 --json
run bench --path fused  --q-heads 1 --q-len 65536 --head-dim 64 --causal --window-left 256 --iters 1 --warmup 1 --dtype f16 --json
run bench --path fused  --q-heads 1 --q-len 65536 --head-dim 64 --causal --window-left 256 --iters 1 --warmup 1 --dtype f32 --json
run bench --path staged --q-heads 1 --q-len 65536 --head-dim 64 --causal --window-left 256 --iters 1 --warmup 0 --dtype f16 --json
for round in 1 2 3 4 5; do
  for dt in f32 f16; do
    run bench --path staged --q-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --iters 5 --warmup 1 --dtype $dt --json
    run bench --path fused  --q-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --iters 5 --warmup 1 --dtype $dt --json
  done
done
