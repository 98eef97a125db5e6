#!/usr/bin/env bash
# A/B of hardware-f16 rows with D a multiple of 4 (not 8) bound as u32 words instead of vec4<f16>:
# old = 36956bb, new = 36956bb + words (release builds).
set -u
D="--path fused --q-heads 32 --kv-heads 32 --q-len 1 --kv-len 8192 --iters 5 --warmup 1 --json --dtype f16"
P="--path fused --q-heads 8 --q-len 1024 --iters 3 --warmup 1 --json --dtype f16"
for round in 1 2 3; do
  for b in packed words; do
    echo "round=$round bin=$b case=decode-f16-d36 $(/tmp/wgattn-$b bench $D --head-dim 36)"
    echo "round=$round bin=$b case=prefill-f16-d36 $(/tmp/wgattn-$b bench $P --head-dim 36)"
    echo "round=$round bin=$b case=decode-f16-d128 $(/tmp/wgattn-$b bench $D --head-dim 128)"
  done
done
