#!/usr/bin/env bash
# The decode kernel's workgroup order on lavapipe, A/B/C in one binary through
# WGATTN_SHADER_DIR: DIRS, shader directories (default: OLD, the kernels of 9407165, key splits
# outermost; SPLITFIRST, splits innermost; shaders/, by block, then split, then group).
# Interleaved per shape (release build); ROUNDS: 2 unless given. Every line is
# `wgattn bench --json` (device time in gpu_median_ms).
B=${B:-./target/release/wgattn}
DIRS=${DIRS:-"$OLD $SPLITFIRST shaders"}
run() { echo "\$ WGATTN_SHADER_DIR=$dir wgattn $*"; WGATTN_SHADER_DIR=$dir $B "$@"; }
for round in $(seq "${ROUNDS:-2}"); do
  for args in "--q-heads 32 --kv-heads 8 --q-len 16 --kv-len 32768" \
              "--q-heads 32 --kv-heads 32 --q-len 7 --kv-len 32768" \
              "--q-heads 32 --kv-heads 32 --q-len 1 --kv-len 8192" \
              "--q-heads 32 --kv-heads 8 --q-len 1 --kv-len 8192" \
              "--q-heads 32 --kv-heads 8 --q-len 1 --kv-len 32768 --causal --window-left 4096"; do
    for dir in $DIRS; do
      run bench --path fused $args --head-dim 128 --iters 5 --warmup 1 --json
    done
  done
done
