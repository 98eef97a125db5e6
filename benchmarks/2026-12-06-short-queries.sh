#!/usr/bin/env bash
# Short query blocks (Lq 2 to 128; Lq = 1 always takes the decode kernel) on the fused
# path's two kernels, lavapipe: the decode kernel (keys split across workgroups, query rows
# sharing each key) forced with `decode-max-q=1024`, the prefill kernel (query tiles, keys
# through workgroup memory) with `decode-max-q=1`, interleaved per shape (release build).
# ROUNDS: 2 unless given. Every line is `wgattn bench --json` (device time in
# gpu_median_ms).
B=${B:-./target/release/wgattn}
run() { echo "\$ wgattn $*"; $B "$@"; }
for round in $(seq "${ROUNDS:-2}"); do
  for shape in "32 32 4096 128 f32" "32 8 4096 128 f32" "8 8 2048 64 f32" "32 8 4096 128 f16"; do
    read -r hq hkv lt d dt <<< "$shape"
    for lq in ${LQS:-2 4 8 16 32 64 128}; do
      for max_q in 1024 1; do
        run bench --path fused --q-heads $hq --kv-heads $hkv --q-len $lq --kv-len $lt \
          --head-dim $d --dtype $dt --iters 3 --warmup 1 --tuning decode-max-q=$max_q --json
      done
    done
  done
done
