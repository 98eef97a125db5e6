#!/usr/bin/env bash
# What bounding the loop trips per invocation (src/loops.rs) costs on lavapipe, in one binary:
# the default (key splits kept within llvmpipe's 65,535 trips) against
# `--tuning max-loop-trips=18446744073709551615` (no bound: the configuration before, whose
# results at these shapes were checked correct with benchmarks/2026-12-07-loop-limit-check.rs).
# Interleaved per shape (release build); ROUNDS: 2 unless given. Every line is
# `wgattn bench --json` (device time in gpu_median_ms).
B=${B:-./target/release/wgattn}
run() { echo "\$ wgattn $*"; $B "$@"; }
for round in $(seq "${ROUNDS:-2}"); do
  for shape in "8 2048 64 none" "8 4096 64 none" "8 4096 64 causal" "32 1024 128 none"; do
    read -r h l d mask <<< "$shape"
    for tuning in "" "max-loop-trips=18446744073709551615"; do
      run bench --path fused --q-heads $h --q-len $l --head-dim $d --iters 3 --warmup 1 \
        ${tuning:+--tuning $tuning} $([ "$mask" = causal ] && echo --causal) --json
    done
  done
done
