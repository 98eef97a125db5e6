#!/usr/bin/env bash
# fused_combine with four elements of a row per invocation (one load of each split's state
# for the four, the accumulator as one vec4) against one invocation per element, on lavapipe.
# OLD and NEW: release binaries of 178605e and of the change (the Rust side picks the
# variant, so one binary cannot run both). Interleaved; ROUNDS: 2 unless given. Every line is
# `wgattn bench --json` (gpu_kernels holds each kernel's device time).
OLD=${OLD:?OLD: wgattn built at 178605e}
NEW=${NEW:?NEW: wgattn built with the change}
run() { echo "\$ $1 $2"; $1 $2; }
for round in $(seq "${ROUNDS:-2}"); do
  for args in "--q-heads 32 --q-len 1024 --head-dim 128" \
              "--q-heads 32 --q-len 1024 --head-dim 128 --dtype f16" \
              "--q-heads 8 --q-len 2048 --head-dim 64" \
              "--q-heads 32 --q-len 1 --kv-len 8192 --head-dim 128"; do
    for bin in "$OLD" "$NEW"; do
      run "$bin" "bench --path fused $args --iters 1 --warmup 1 --json"
    done
  done
done
