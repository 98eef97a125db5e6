#!/usr/bin/env bash
# Decode kernel, MHA query blocks whose rows per key/value head (5, 7, 13) have no divisor
# from 2 to 4, on lavapipe, in one binary: the default since 1e83409 (groups of up to 4 rows,
# the last one short) against `--tuning decode-rows=1` (one row per workgroup, what the
# divisor rule chose before). `decode-max-q=1024` so every length takes the decode kernel.
# Interleaved (release build); ROUNDS: 3 unless given. Every line is `wgattn bench --json`.
B=${B:-./target/release/wgattn}
run() { echo "\$ wgattn $*"; $B "$@"; }
for round in $(seq "${ROUNDS:-3}"); do
  for lq in 5 7 13; do
    for tuning in "decode-max-q=1024,decode-rows=1" "decode-max-q=1024"; do
      run bench --path fused --q-heads 32 --kv-heads 32 --q-len $lq --kv-len 4096 \
        --head-dim 128 --iters 3 --warmup 1 --tuning $tuning --json
    done
  done
done
