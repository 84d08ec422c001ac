#!/usr/bin/env bash
# The main job end to end on synthetic data (no download): synth -> build -> stage 1 (appearance
# and pose) -> stage 2 (IntegralAction) -> evaluation in context and out of context.
# Sizes are tiny so that it runs in a few minutes on a 2-core laptop; see docs/training.md for
# the paper's settings.
set -euo pipefail
DEMO=${1:-demo}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
SMALL=(--appearance-depth 18 --pose-depth 18 --input-size 64 --clip-len 4 --stride 4
       --pose-clip-len 8 --pose-stride 2 --batch-size 8 --workers 1 --precise-bn 4)

echo "== 1/6 synthetic Kinetics-style data (in context) and a Mimetics-style test set (out of context)"
pipeline synth --dataset kinetics --out "$DEMO/raw" --num-classes 4 --videos-per-class 12 --seed 0 --overwrite
pipeline synth --dataset mimetics --out "$DEMO/raw_ooc" --num-classes 4 --videos-per-class 4 --context out --seed 1 --overwrite

echo "== 2/6 pipeline build (precomputed poses; add --pose mediapipe to estimate them)"
pipeline build --dataset kinetics --videos "$DEMO/raw/videos" --annotations "$DEMO/raw/annotations.csv" \
  --classes "$DEMO/raw/classes.txt" --pose precomputed --poses "$DEMO/raw/skeletons" \
  --short-side 128 --out "$DEMO/shards" --overwrite
pipeline build --dataset mimetics --videos "$DEMO/raw_ooc/videos" --annotations "$DEMO/raw_ooc/annotations.csv" \
  --classes "$DEMO/raw/classes.txt" --pose precomputed --poses "$DEMO/raw_ooc/skeletons" \
  --short-side 128 --out "$DEMO/shards_ooc" --overwrite
pipeline verify "$DEMO/shards"

echo "== 3/6 stage 1: appearance-only"
train fit --stage appearance --data "$DEMO/shards" --out "$DEMO/runs/appearance" --epochs 6 --lr 0.01 "${SMALL[@]}"
echo "== 4/6 stage 1: pose-only"
train fit --stage pose --data "$DEMO/shards" --out "$DEMO/runs/pose" --epochs 6 --lr 0.01 "${SMALL[@]}"
echo "== 5/6 stage 2: IntegralAction (frozen streams, pose-driven gate)"
train fit --stage integral --data "$DEMO/shards" --out "$DEMO/runs/integral" --epochs 3 --lr 0.01 \
  --init-appearance "$DEMO/runs/appearance/best.pt" --init-pose "$DEMO/runs/pose/best.pt" "${SMALL[@]}"

echo "== 6/6 evaluation: in context (val) and out of context (Mimetics-style test)"
train eval --checkpoint "$DEMO/runs/integral/best.pt" --data "$DEMO/shards" --split val --out "$DEMO/results_in_context.json"
train eval --checkpoint "$DEMO/runs/integral/best.pt" --data "$DEMO/shards_ooc" --split test --class-map name \
  --out "$DEMO/results_out_of_context.json"
echo "demo done: results in $DEMO/results_*.json"
