#!/usr/bin/env bash
# Multi-node DDP training from shards in object storage (docs/cluster.md, "Training on several
# GPU nodes"). Run the same command on every node, inside the image built with
#   docker build -f docker/Dockerfile.gpu --target train -t integralaction:gpu-train .
#   docker run --rm --gpus all --network host --ipc host \
#     -v /mnt/nvme:/cache -v /mnt/shared:/shared \
#     -e HEAD=10.0.0.11 -e NNODES=4 -e AWS_DEFAULT_REGION=us-east-1 \
#     integralaction:gpu-train bash /opt/integralaction/torchrun-multinode.sh
# (--network host: NCCL and the rendezvous reach the other nodes directly; --ipc host: DataLoader
# workers pass batches through /dev/shm, which Docker otherwise caps at 64 MB.)
#
# HEAD      address of one node (any; all use the same), where the c10d rendezvous listens
# NNODES    nodes in the job; each runs NPROC processes, one per GPU
# DATA      dataset root in object storage (where dataset.json is)
# OUT       run folder on a filesystem every node sees (EFS, FSx, NFS): rank 0 writes the
#           checkpoints there and, with --resume, every rank reads last.pt from it
# CACHE     local disk for shard copies (--cache-dir): each shard is fetched once per node
set -euo pipefail

: "${HEAD:?set HEAD to the address of the rendezvous node}"
NNODES="${NNODES:-4}"
NPROC="${NPROC:-8}"
DATA="${DATA:-s3://my-bucket/shards/k400-mmpose}"
OUT="${OUT:-/shared/runs/k400-appearance}"
CACHE="${CACHE:-/cache/shards}"
RUN_ID="${RUN_ID:-k400-appearance}"

# Paper global batch 32: --batch-size (per process) defaults to 32 / (NNODES x NPROC), e.g. 1
# on 4 x 8 GPUs. --resume continues from OUT/last.pt after a failure (and starts a new run when
# there is none), so the same command serves both.
exec torchrun --nnodes "$NNODES" --nproc_per_node "$NPROC" \
    --rdzv_backend c10d --rdzv_endpoint "$HEAD:29500" --rdzv_id "$RUN_ID" \
    -m train fit --stage appearance --data "$DATA" --out "$OUT" \
    --schedule kinetics --workers 6 --cache-dir "$CACHE" --resume
