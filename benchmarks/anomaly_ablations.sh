#!/bin/bash
# CATHODE sampling/ensembling ablations that reuse a trained sideband flow (issue 20):
# copies the CATHODE run RUN (train done) to OUT/NAME/cathode/seedS for each NAME:OVERRIDE,
# then runs `sample OVERRIDE`, `classify` and `evaluate` (max SIC, AUC, background-template
# AUC) there. Only the sampling and the classifier change; the flow is the same.
#   benchmarks/anomaly_ablations.sh outputs/anomaly-bench/correlated/cathode/seed0 \
#       outputs/anomaly-ablate ens1:ensemble=1 n60k:sample.n=60000 n960k:sample.n=960000
set -euo pipefail
RUN=$1; OUT=$2; shift 2
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for spec in "$@"; do
  name=${spec%%:*}; ov=${spec#*:}
  d=$OUT/$name/cathode/$(basename "$RUN")
  rm -rf "${OUT:?}/$name"; mkdir -p "$(dirname "$d")"
  cp -r "$RUN" "$d"
  rm -rf "$d/samples.h5" "$d/scores.npz" "$d/metrics.json" "$d/plots" "$d/checkpoints/classifier.pt"
  t0=$(date +%s)
  $PY -m flowctl sample "run=$d" $ov > "$OUT/$name.log" 2>&1
  $PY -m flowctl classify "run=$d" >> "$OUT/$name.log" 2>&1
  $PY -m flowctl evaluate "run=$d" "eval.search=[$OUT/$name]" eval.min_runs=1 >> "$OUT/$name.log" 2>&1
  echo "$name ($ov): $(( $(date +%s) - t0 )) s; $(grep -h 'test AUC' "$OUT/$name.log")"
done
