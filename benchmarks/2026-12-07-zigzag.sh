#!/usr/bin/env bash
# The prefill kernel's tile order on lavapipe, A/B in one binary through WGATTN_SHADER_DIR:
# OLD (a directory with fused.wgsl of a5061f6: a head's tiles in order) against shaders/
# (zig-zag: 0, n-1, 1, n-2, ...). Interleaved (release build); ROUNDS: 2 unless given. Every
# line is `wgattn bench --json` (device time in gpu_median_ms).
B=${B:-./target/release/wgattn}
OLD=${OLD:?OLD: shaders/ with fused.wgsl of a5061f6}
run() { echo "\$ WGATTN_SHADER_DIR=$dir wgattn $*"; WGATTN_SHADER_DIR=$dir $B "$@"; }
for round in $(seq "${ROUNDS:-2}"); do
  for args in "--q-heads 1 --q-len 8192" "--q-heads 1 --q-len 8192 --causal" \
              "--q-heads 8 --q-len 4096 --causal" "--q-heads 8 --q-len 4096"; do
    for dir in "$OLD" shaders; do
      run bench --path fused $args --head-dim 64 --iters 1 --warmup 1 --json
    done
  done
done
