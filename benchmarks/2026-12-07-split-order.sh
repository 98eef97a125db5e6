#!/usr/bin/env bash
# The fused kernels' workgroup order on lavapipe, A/B in one binary through WGATTN_SHADER_DIR:
# OLD (a directory with fused.wgsl and fused_decode.wgsl of 9407165: key splits outermost)
# against NEW (default: shaders/, a tile's or group's splits neighbouring), plus the prefill
# without its loop-trip bound (one split per tile, `--tuning max-loop-trips=MAX`).
# Interleaved per shape (release build); ROUNDS: 2 unless given. Every line is
# `wgattn bench --json` (device time in gpu_median_ms, per kernel in gpu_kernels).
B=${B:-./target/release/wgattn}
OLD=${OLD:?OLD: a shader directory with the kernels of 9407165}
NEW=${NEW:-shaders}
run() { echo "\$ WGATTN_SHADER_DIR=$dir wgattn $*"; WGATTN_SHADER_DIR=$dir $B "$@"; }
for round in $(seq "${ROUNDS:-2}"); do
  for args in "--q-heads 8 --q-len 4096 --head-dim 64 --causal" \
              "--q-heads 8 --q-len 4096 --head-dim 64" \
              "--q-heads 8 --q-len 2048 --head-dim 64" \
              "--q-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --causal --window-left 256" \
              "--q-heads 32 --q-len 1 --kv-len 8192 --head-dim 128"; do
    for dir in "$OLD" "$NEW"; do
      run bench --path fused $args --iters 3 --warmup 1 --json
    done
    case "$args" in *q-len\ 1\ *) ;; *)
      dir=$NEW run bench --path fused $args --iters 3 --warmup 1 \
        --tuning max-loop-trips=18446744073709551615 --json ;;
    esac
  done
done
