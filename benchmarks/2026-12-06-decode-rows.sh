#!/usr/bin/env bash
# Decode with up to four query rows per workgroup (a GQA group's heads, a short query block's
# rows) sharing each key and value row loaded: the binary before (OLD) and after (NEW) the
# change, interleaved, ROUNDS rounds, device and wall time; then NEW with other
# `--tuning decode-rows=N` and the other decode layout. One JSON line per run, prefixed by
# round, case and binary.
#   OLD=/tmp/old-target/release/wgattn NEW=target/release/wgattn ROUNDS=2 \
#     bash benchmarks/2026-12-06-decode-rows.sh
set -euo pipefail
OLD=${OLD:?the binary before} NEW=${NEW:-target/release/wgattn} ROUNDS=${ROUNDS:-2}
common="bench --path fused --kv-len 8192 --head-dim 128 --iters 5 --warmup 1 --json"
for round in $(seq 1 "$ROUNDS"); do
    for shape in "mha f32|--q-heads 32 --kv-heads 32 --q-len 1" \
                 "gqa4 f32|--q-heads 32 --kv-heads 8 --q-len 1" \
                 "gqa4 f16|--q-heads 32 --kv-heads 8 --q-len 1 --dtype f16" \
                 "gqa8 f32|--q-heads 32 --kv-heads 4 --q-len 1" \
                 "mha lq4 f32|--q-heads 32 --kv-heads 32 --q-len 4"; do
        label=${shape%%|*} flags=${shape#*|}
        for bin in OLD NEW; do
            # shellcheck disable=SC2086
            echo "$round $label $bin $(${!bin} $common $flags)"
        done
    done
    for tuning in decode-rows=1 decode-rows=2 decode-rows=3; do
        # shellcheck disable=SC2086
        echo "$round gqa4 f32 NEW $tuning $($NEW $common --q-heads 32 --kv-heads 8 --q-len 1 --tuning $tuning)"
    done
    # shellcheck disable=SC2086
    echo "$round gqa4 f16 NEW subgroup-keys $($NEW $common --q-heads 32 --kv-heads 8 --q-len 1 --dtype f16 --decode-layout subgroup-keys)"
done
