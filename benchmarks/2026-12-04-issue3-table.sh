#!/usr/bin/env bash
# The issue-3 target table (run at 9319f42 on the AVX2 host, and with ROUNDS=5 at 8a50487 on the
# AVX-512 host; release builds). ROUNDS: decode rounds, 3 unless given. RESIDENT=1: each decode
# run also with --resident (q, k, v kept on the device; run so at 17297a1).
B=${B:-./target/release/wgattn}
run() { echo "\$ wgattn $*"; $B "$@"; }
run bench --path staged --q-heads 8 --q-len 2048 --head-dim 64 --iters 1 --warmup 1 --json
run bench --path fused  --q-heads 8 --q-len 2048 --head-dim 64 --iters 3 --warmup 1 --json
run bench --path fused  --q-heads 8 --q-len 4096 --head-dim 64 --iters 1 --warmup 1 --json
run bench --path fused  --q-heads 8 --q-len 4096 --head-dim 64 --causal --iters 1 --warmup 1 --json
run bench --path fused  --q-heads 1 --q-len 65536 --head-dim 64 --causal --window-left 256 --iters 1 --warmup 1 --dtype f16 --json
run bench --path fused  --q-heads 1 --q-len 65536 --head-dim 64 --causal --window-left 256 --iters 1 --warmup 1 --dtype f32 --json
run bench --path staged --q-heads 1 --q-len 65536 --head-dim 64 --causal --window-left 256 --iters 1 --warmup 0 --dtype f16 --json
modes=("")
[ -n "${RESIDENT:-}" ] && modes+=(--resident)
for round in $(seq "${ROUNDS:-3}"); do
  for dt in f32 f16; do
    for mode in "${modes[@]}"; do
      run bench --path staged --q-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --iters 5 --warmup 1 --dtype $dt --json $mode
      run bench --path fused  --q-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --iters 5 --warmup 1 --dtype $dt --json $mode
    done
  done
done
