#!/usr/bin/env bash
# The staged path's value stage with four keys per loop trip (bounded loop trips on llvmpipe)
# against the kernel before (one key per trip), A/B in one binary through WGATTN_SHADER_DIR:
# OLD, a copy of shaders/ with attend_values.wgsl of 9407165. Interleaved (release build);
# ROUNDS: 2 unless given. Every line is `wgattn bench --json` (per kernel in gpu_kernels).
B=${B:-./target/release/wgattn}
OLD=${OLD:?OLD: shaders/ with attend_values.wgsl of 9407165}
run() { echo "\$ WGATTN_SHADER_DIR=$dir wgattn $*"; WGATTN_SHADER_DIR=$dir $B "$@"; }
for round in $(seq "${ROUNDS:-2}"); do
  for args in "--q-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --iters 5" \
              "--q-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --iters 5 --dtype f16" \
              "--q-heads 8 --q-len 2048 --head-dim 64 --iters 1"; do
    for dir in "$OLD" shaders; do
      run bench --path staged $args --warmup 1 --json
    done
  done
done
