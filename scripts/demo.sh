#!/usr/bin/env bash
# The main job end to end on synthetic data (no download): synth -> build -> stage 1 (appearance
# and pose) -> stage 2 (IntegralAction on cached features of the frozen streams) -> evaluation
# in context and out of context, ending with one table.
# Sizes are tiny so that it runs in a few minutes on a 2-core laptop; see docs/training.md for
# the paper's settings.
#   scripts/demo.sh [DIR] [SEED]      (or DEMO_SEED=1 scripts/demo.sh); the default seed is 0
set -euo pipefail
DEMO=${1:-demo}
SEED=${2:-${DEMO_SEED:-0}}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
# One BLAS thread per process: the DataLoader worker and the trainer share the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SMALL=(--appearance-depth 18 --pose-depth 18 --input-size 64 --clip-len 4 --stride 4
       --pose-clip-len 4 --pose-stride 4 --batch-size 8 --workers 1 --seed "$SEED"
       --keep-checkpoints 1)
# The pose stream sees a 16 px raster of a box around the person (PoseC3D's PoseCompact), with
# sigma 1 px; the paper's setting is --pose-crop frame at a quarter of the input, sigma 0.5.
POSE=(--pose-crop person --pose-size 16 --pose-sigma 1.0)

echo "== 1/6 synthetic Kinetics-style data (in context) and a Mimetics-style test set (out of context)"
# 4 classes; the last two share a scene, so in context only their motion tells them apart.
CLASSES=(--num-classes 4 --shared-context 2)
if [ ! -f "$DEMO/shards_ooc/dataset.json" ]; then
pipeline synth --dataset kinetics --out "$DEMO/raw" "${CLASSES[@]}" --videos-per-class 12 --seed 0 --overwrite
pipeline synth --dataset mimetics --out "$DEMO/raw_ooc" "${CLASSES[@]}" --videos-per-class 6 --context out --seed 1 --overwrite

echo "== 2/6 pipeline build (precomputed poses; add --pose mediapipe to estimate them)"
pipeline build --dataset kinetics --videos "$DEMO/raw/videos" --annotations "$DEMO/raw/annotations.csv" \
  --classes "$DEMO/raw/classes.txt" --pose precomputed --poses "$DEMO/raw/skeletons" \
  --short-side 128 --out "$DEMO/shards" --overwrite
pipeline build --dataset mimetics --videos "$DEMO/raw_ooc/videos" --annotations "$DEMO/raw_ooc/annotations.csv" \
  --classes "$DEMO/raw/classes.txt" --pose precomputed --poses "$DEMO/raw_ooc/skeletons" \
  --short-side 128 --out "$DEMO/shards_ooc" --overwrite
pipeline verify "$DEMO/shards"
fi  # the data does not depend on the seed: built once per $DEMO folder

RUNS="$DEMO/runs/seed$SEED"
rm -rf "$RUNS"
echo "== 3/6 stage 1: appearance-only"
train fit --stage appearance --data "$DEMO/shards" --out "$RUNS/appearance" --epochs 6 --lr 0.01 \
  --precise-bn 4 "${SMALL[@]}"
echo "== 4/6 stage 1: pose-only"
train fit --stage pose --data "$DEMO/shards" --out "$RUNS/pose" --epochs 15 --lr 0.01 \
  --precise-bn 4 "${SMALL[@]}" "${POSE[@]}"
echo "== 5/6 stage 2: IntegralAction (frozen streams, pose-driven gate, 4 cached views per video)"
train fit --stage integral --data "$DEMO/shards" --out "$RUNS/integral" --schedule stage2 --epochs 30 \
  --lr 0.03 --cache-features 4 --init-appearance "$RUNS/appearance/last.pt" \
  --init-pose "$RUNS/pose/last.pt" "${SMALL[@]}"

echo "== 6/6 evaluation: in context (val) and out of context (Mimetics-style test)"
for model in appearance pose integral; do
  plot=()
  if [ "$model" = integral ]; then plot=(--plot "$RUNS/gate_out_of_context.png"); fi
  train eval --checkpoint "$RUNS/$model/last.pt" --data "$DEMO/shards" --split val \
    --video-info "$DEMO/raw" --clips 3 --workers 1 --quiet --out "$RUNS/${model}_in_context.json"
  train eval --checkpoint "$RUNS/$model/last.pt" --data "$DEMO/shards_ooc" --split test --class-map name \
    --video-info "$DEMO/raw_ooc" --clips 3 --workers 1 --quiet "${plot[@]}" --out "$RUNS/${model}_out_of_context.json"
done

python - "$RUNS" "$SEED" <<'EOF'
import json, sys
runs, seed = sys.argv[1], sys.argv[2]
rows = [("appearance-only", "appearance"), ("pose-only", "pose"), ("IntegralAction", "integral")]
print(f"\nDemo results, seed {seed} (top-1 %; 4 classes, chance 25 %; mean gate G = the weight")
print("of appearance, 0 = pose only; the last epoch of each run, no selection on the tests)\n")
print(f"{'model':<17}{'in context':>12}{'out of context':>16}{'mean gate in / out':>21}")
for name, run in rows:
    r = {p: json.load(open(f"{runs}/{run}_{p}.json")) for p in ("in_context", "out_of_context")}
    gate = ""
    if "mean_gate" in r["in_context"]:
        gate = f"{r['in_context']['mean_gate']:.2f} / {r['out_of_context']['mean_gate']:.2f}"
    print(f"{name:<17}{r['in_context']['top1']:>12.1f}{r['out_of_context']['top1']:>16.1f}{gate:>21}")
print(f"\nreports: {runs}/*.json; gate distribution out of context: {runs}/gate_out_of_context.png")
EOF
