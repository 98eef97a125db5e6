#!/usr/bin/env bash
# Query rows sharing each key in the subgroup-per-key decode layout too: the binary before
# (OLD: rows with a key per invocation only) and after (NEW), interleaved, ROUNDS rounds, on
# the shapes where CPU adapters take a subgroup per key (wide heads) and on f16 D=128 in both
# layouts. One JSON line per run, prefixed by round, case and binary.
#   OLD=<build of 462bbd4> NEW=<build of this change> ROUNDS=2 \
#     bash benchmarks/2026-12-06-decode-rows-subgroup.sh
set -euo pipefail
OLD=${OLD:?the binary before} NEW=${NEW:?the binary after} ROUNDS=${ROUNDS:-2}
common="bench --path fused --q-len 1 --kv-len 8192 --iters 5 --warmup 1 --json"
for round in $(seq 1 "$ROUNDS"); do
    for shape in "gqa4 d256 f32|--q-heads 32 --kv-heads 8 --head-dim 256" \
                 "gqa4 d256 f16|--q-heads 32 --kv-heads 8 --head-dim 256 --dtype f16" \
                 "mha d256 f32|--q-heads 32 --kv-heads 32 --head-dim 256" \
                 "mha d128 f16|--q-heads 32 --kv-heads 32 --head-dim 128 --dtype f16" \
                 "gqa4 d128 f16 subgroup-keys|--q-heads 32 --kv-heads 8 --head-dim 128 --dtype f16 --decode-layout subgroup-keys" \
                 "gqa4 d128 f16 key-per-invocation|--q-heads 32 --kv-heads 8 --head-dim 128 --dtype f16 --decode-layout key-per-invocation" \
                 "gqa4 d128 f32 subgroup-keys|--q-heads 32 --kv-heads 8 --head-dim 128 --decode-layout subgroup-keys" \
                 "gqa4 d128 f32 key-per-invocation|--q-heads 32 --kv-heads 8 --head-dim 128 --decode-layout key-per-invocation"; do
        label=${shape%%|*} flags=${shape#*|}
        for bin in OLD NEW; do
            # shellcheck disable=SC2086
            echo "$round $label $bin $(${!bin} $common $flags)"
        done
    done
done
