#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one run of about 8 minutes on an H100/H200: training
# throughput against the plain loop, trials/hour with 1, 2 and 4 workers on the GPU, and a short
# paper-profile study followed by `best --test`, `train --from-study` and `ensemble --top-k 3`.
# Each step has its own time limit, so one that hangs costs only its own figures.
#
#   bash benchmarks/gpu.sh [OUTDIR]        (logs: OUTDIR/<step>.log, default ./gpu-results)
set -u
out=${1:-gpu-results}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local started=$SECONDS
    timeout --signal=INT --kill-after=20 "$limit" "$@" > >(tee "$out/$name.log") 2>&1
    echo "== $name: exit $?, $((SECONDS - started)) s"
}

"$py" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
step throughput-m3 150 "$py" -m benchmarks.train_throughput --models m3 --images 60000
step throughput-tiny 70 "$py" -m benchmarks.train_throughput --models tiny-cnn --images 30000
step packing 120 "$py" -m benchmarks.gpu_packing --trials 12

work=$(mktemp -d)
storage="journal:$work/paper.log"
step paper-search 220 "$py" -m mnist_hpo search --study paper --profile paper --epochs 10 --trials-per-gpu 4 \
    --timeout 110 --storage "$storage" --artifacts "$work/artifacts"
step paper-best 40 "$py" -m mnist_hpo best --study paper --storage "$storage" --artifacts "$work/artifacts" --test
step paper-retrain 80 "$py" -m mnist_hpo train --from-study paper --storage "$storage"
step paper-ensemble 60 "$py" -m mnist_hpo ensemble --study paper --top-k 3 --out "$work/ensemble.pt" \
    --storage "$storage" --artifacts "$work/artifacts"
