#!/usr/bin/env bash
# Short query blocks against more keys than 16 splits of 512 (Lt > 8192) on lavapipe, in one
# binary: the default (CPU adapters: the decode kernel with at most 16 splits of up to 2048
# keys) against `--tuning decode-max-q=4` (the prefill kernel, the default before), and the
# decode kernel with 512-key splits (`decode-max-q=1024,decode-keys-per-split=512`, more
# splits and partials). Interleaved per shape (release build); ROUNDS: 2 unless given.
# Every line is `wgattn bench --json` (device time in gpu_median_ms).
B=${B:-./target/release/wgattn}
run() { echo "\$ wgattn $*"; $B "$@"; }
for round in $(seq "${ROUNDS:-2}"); do
  for shape in "32 8 16 12288" "32 8 16 16384" "32 8 16 32768" "32 32 7 16384" "32 32 7 32768"; do
    read -r hq hkv lq lt <<< "$shape"
    for tuning in "decode-max-q=4" "" "decode-max-q=1024,decode-keys-per-split=512"; do
      run bench --path fused --q-heads $hq --kv-heads $hkv --q-len $lq --kv-len $lt \
        --head-dim 128 --iters 3 --warmup 1 ${tuning:+--tuning $tuning} --json
    done
  done
done
