#!/usr/bin/env bash
# A/B of the eight-element f16/bf16 loads: old = 1acab26, new = 1acab26 + VEC8 (release builds).
set -u
D="--q-heads 32 --kv-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --iters 5 --warmup 1 --json"
P="--q-heads 8 --q-len 1024 --head-dim 64 --iters 3 --warmup 1 --json"
for round in 1 2 3; do
  for b in old new; do
    echo "round=$round bin=$b case=decode-f16 $(/tmp/wgattn-$b bench --path fused --dtype f16 $D)"
    echo "round=$round bin=$b case=decode-f16-without-shader-f16 $(/tmp/wgattn-$b bench --path fused --dtype f16 --without shader-f16 $D)"
    echo "round=$round bin=$b case=decode-bf16 $(/tmp/wgattn-$b bench --path fused --dtype bf16 $D)"
    echo "round=$round bin=$b case=decode-f32 $(/tmp/wgattn-$b bench --path fused --dtype f32 $D)"
    echo "round=$round bin=$b case=prefill-f16 $(/tmp/wgattn-$b bench --path fused --dtype f16 $P)"
  done
  echo "round=$round bin=new case=decode-f16-staged $(/tmp/wgattn-new bench --path staged --dtype f16 $D)"
  echo "round=$round bin=new case=decode-f32-staged $(/tmp/wgattn-new bench --path staged --dtype f32 $D)"
done
