#!/usr/bin/env bash
# The bias test by bits (`allows`/`allows4`, 8ce87ba) against the ordered `!=` before it
# (dcaa8dc): the fused decode (MHA and GQA f32, MHA f16) and a causal prefill, interleaved,
# ROUNDS rounds. One JSON line per run, prefixed by round and binary.
#   OLD=/tmp/wgattn_old NEW=target/release/wgattn ROUNDS=3 \
#     bash benchmarks/2026-12-06-allows-bits.sh
set -euo pipefail
OLD=${OLD:?the binary before} NEW=${NEW:-target/release/wgattn} ROUNDS=${ROUNDS:-3}
for round in $(seq 1 "$ROUNDS"); do
    for bin in "$OLD" "$NEW"; do
        for args in "--q-heads 32 --kv-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --dtype f32" \
                    "--q-heads 32 --kv-heads 8 --q-len 1 --kv-len 8192 --head-dim 128 --dtype f32" \
                    "--q-heads 32 --kv-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --dtype f16" \
                    "--q-heads 8 --kv-heads 8 --q-len 1024 --kv-len 1024 --head-dim 64 --dtype f32 --causal"; do
            # shellcheck disable=SC2086
            echo "round=$round bin=$bin $("$bin" bench --path fused $args --iters 5 --warmup 1 --json)"
        done
    done
done
