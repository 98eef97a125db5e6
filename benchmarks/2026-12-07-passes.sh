#!/usr/bin/env bash
# The prefill kernel's loop-bounded key splits all at once (OLD: wgattn built at 101ffa8)
# against splits beyond the device's parallel ones in passes carrying the rows' states (NEW),
# on lavapipe. Interleaved; ROUNDS: 2 unless given. Every line is `wgattn bench --json`
# (device time in gpu_median_ms, peak memory in gpu_bytes).
OLD=${OLD:?OLD: wgattn built at 101ffa8}
NEW=${NEW:?NEW: wgattn built with passes}
run() { echo "\$ $1 $2"; $1 $2; }
for round in $(seq "${ROUNDS:-2}"); do
  for args in "--q-heads 8 --q-len 2048 --head-dim 64" \
              "--q-heads 8 --q-len 4096 --head-dim 64" \
              "--q-heads 8 --q-len 4096 --head-dim 64 --causal" \
              "--q-heads 32 --q-len 1024 --head-dim 128"; do
    for bin in "$OLD" "$NEW"; do
      run "$bin" "bench --path fused $args --iters 1 --warmup 1 --json"
    done
  done
done
