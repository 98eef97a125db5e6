#!/usr/bin/env bash
# The fused path's default choice for short query blocks on lavapipe before and after
# session 14's rule (CPU adapters: the decode kernel up to 128 query rows where the keys
# make at most 16 splits), in one binary: `--tuning decode-max-q=4` is the old default.
# Interleaved per shape (release build); ROUNDS: 2 unless given. Every line is
# `wgattn bench --json` (device time in gpu_median_ms, the kernels in gpu_kernels).
B=${B:-./target/release/wgattn}
run() { echo "\$ wgattn $*"; $B "$@"; }
for round in $(seq "${ROUNDS:-2}"); do
  for shape in "32 8 7 4096 128" "32 32 7 4096 128" "32 32 5 4096 128" "32 8 16 8192 128" \
               "32 8 16 8193 128" "8 8 128 2048 64" "12 12 64 1024 64"; do
    read -r hq hkv lq lt d <<< "$shape"
    for tuning in "decode-max-q=4" ""; do
      run bench --path fused --q-heads $hq --kv-heads $hkv --q-len $lq --kv-len $lt \
        --head-dim $d --iters 3 --warmup 1 ${tuning:+--tuning $tuning} --json
    done
  done
done
