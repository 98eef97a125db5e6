#!/usr/bin/env bash
# Longer query blocks (Lq = Lt = 256 to 2048, H=8, D=64, f32), with and without causal, on
# the fused path's two kernels on lavapipe: the decode kernel forced with
# `decode-max-q=4096` (one split per 512 keys), the prefill kernel with `decode-max-q=1`
# (release build). Every line is `wgattn bench --json` (device time in gpu_median_ms).
B=${B:-./target/release/wgattn}
for lq in 256 512 1024 2048; do for c in "" "--causal"; do for mq in 4096 1; do
echo "\$ wgattn bench --path fused --q-heads 8 --kv-heads 8 --q-len $lq --kv-len $lq --head-dim 64 --iters 3 --warmup 1 --tuning decode-max-q=$mq $c --json"
$B bench --path fused --q-heads 8 --kv-heads 8 --q-len $lq --kv-len $lq --head-dim 64 --iters 3 --warmup 1 --tuning decode-max-q=$mq $c --json
done; done; done
