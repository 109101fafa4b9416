#!/usr/bin/env bash
# The main job on generated data: sample -> check -> split -> train -> predict -> evaluate.
# Everything lands in demo/ (ignored by git); the caches in demo/cache.
set -euo pipefail
cd "$(dirname "$0")/.."
S=".venv/bin/skinclf"
OUT=demo
rm -rf "$OUT"
mkdir -p "$OUT"
export SKINCLF_CACHE_DIR="$PWD/$OUT/cache"

echo "== 1. generate a small HAM10000-format dataset and a PAD-UFES-20-format OOD set"
$S data sample --format ham10000 --out "$OUT/ham" --n 30 --size 64
$S data sample --format pad-ufes-20 --out "$OUT/pad" --n 8 --size 64

echo "== 2. check the data and write the data report"
$S data check "$OUT/ham" --report "$OUT/ham_eda.html"
$S data check "$OUT/pad" --report "$OUT/pad_eda.html"

echo "== 3. grouped, stratified split (no lesion in two splits)"
$S data split "$OUT/ham" --out "$OUT/split.csv" --val 0.2 --test 0.2

echo "== 4. train (preset 'sample': head on frozen features, then 1 epoch of fine-tuning)"
$S train --data "$OUT/ham" --split "$OUT/split.csv" --out "$OUT/run" --preset sample --no-progress

echo "== 5. predict val, test and the out-of-distribution set with several confidence scores"
SCORES=msp,max_logit,margin,neg_entropy,doctor,energy,knn,mahalanobis,rel_mahalanobis,vim
for split in val test; do
  $S predict "$OUT/run" --split "$split" --scores "$SCORES" --mc-dropout 5 \
    --out "$OUT/run/eval/${split}_predictions.csv" --no-progress
done
$S predict "$OUT/run" --data "$OUT/pad" --scores "$SCORES" --mc-dropout 5 \
  --out "$OUT/run/eval/pad_predictions.csv" --no-progress

echo "== 6. evaluate: metrics, selective classification, an OOD gate chosen on validation only"
echo "      (no OOD label), the SGR threshold behind it, OOD metrics, report"
$S evaluate --val "$OUT/run/eval/val_predictions.csv" --test "$OUT/run/eval/test_predictions.csv" \
  --ood "$OUT/run/eval/pad_predictions.csv" --target-risk 0.3 --out "$OUT/run/eval" \
  --choose-gate --id-keep 0.95 --gate-stats "$OUT/run/feature_stats.npz"

echo "== 7. predict with abstention (OOD gate, then confidence gate) from selective.json"
$S predict "$OUT/run" --data "$OUT/pad" --selective "$OUT/run/eval/selective.json" \
  --out "$OUT/pad_with_abstain.csv" --no-progress

echo
echo "Done. Open $OUT/run/eval/report.html and $OUT/ham_eda.html in a browser;"
echo "the run folder is $OUT/run (config.yaml, metrics.json, curves.png, checkpoints/)."
