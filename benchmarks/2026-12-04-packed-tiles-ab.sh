#!/usr/bin/env bash
# A/B of f16/bf16 prefill tiles kept as loaded words: old = 9319f42 (f32 tiles), new = packed tiles (release builds).
set -u
P="--path fused --q-heads 8 --q-len 1024 --iters 3 --warmup 1 --json"
D="--path fused --q-heads 32 --kv-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --iters 5 --warmup 1 --json"
for round in 1 2 3; do
  for b in old packed; do
    echo "round=$round bin=$b case=prefill-f16-d64 $(/tmp/wgattn-$b bench $P --head-dim 64 --dtype f16)"
    echo "round=$round bin=$b case=prefill-f16-d64-without-shader-f16 $(/tmp/wgattn-$b bench $P --head-dim 64 --dtype f16 --without shader-f16)"
    echo "round=$round bin=$b case=prefill-bf16-d64 $(/tmp/wgattn-$b bench $P --head-dim 64 --dtype bf16)"
    echo "round=$round bin=$b case=prefill-f16-d128 $(/tmp/wgattn-$b bench $P --head-dim 128 --dtype f16)"
    echo "round=$round bin=$b case=prefill-f32-d64 $(/tmp/wgattn-$b bench $P --head-dim 64 --dtype f32)"
    echo "round=$round bin=$b case=decode-f16 $(/tmp/wgattn-$b bench $D --dtype f16)"
  done
done
