#!/usr/bin/env bash
# A/B of fused_decode with its K/V loads outside conditions (U: shaders/ with
# benchmarks/2026-12-04-decode-hoisted-loads.patch applied, in /tmp/sdU) against the committed
# shaders (A: a copy in /tmp/sdA), same release binary (8a50487), through WGATTN_SHADER_DIR.
set -u
B=./target/release/wgattn
D="--q-heads 32 --kv-heads 32 --q-len 1 --kv-len 8192 --head-dim 128 --iters 7 --warmup 1 --json"
for round in 1 2 3; do
  echo "round=$round sd=staged case=f32 $($B bench --path staged $D)"
  for sd in A U; do
    echo "round=$round sd=$sd case=f32 $(WGATTN_SHADER_DIR=/tmp/sd$sd $B bench --path fused $D)"
    echo "round=$round sd=$sd case=f16 $(WGATTN_SHADER_DIR=/tmp/sd$sd $B bench --path fused $D --dtype f16)"
    echo "round=$round sd=$sd case=window-f32 $(WGATTN_SHADER_DIR=/tmp/sd$sd $B bench --path fused $D --causal --window-left 2000)"
  done
done
