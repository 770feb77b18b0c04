#!/usr/bin/env bash
# Evaluation with the model zoo's script arguments (DEVICE_ID DEVICE_TARGET DATASET_PATH
# CHECKPOINT_PATH): scores the test split of a preprocessed folder with a checkpoint, the
# zoo's own or this project's. Foreground; the log goes to the console and to
# ms_log/eval_output.log, the result line is appended to auc.log. Extra arguments go to
# `python -m deepfm_lib.eval` (e.g. --infer_shapes True for a zoo checkpoint).
set -euo pipefail

usage="usage: bash scripts/run_eval.sh DEVICE_ID DEVICE_TARGET DATASET_PATH CHECKPOINT_PATH [eval flags...]
  e.g. bash scripts/run_eval.sh 0 CPU data/processed checkpoint/model.ckpt"
if [[ $# -lt 4 || ! "$1" =~ ^[0-9]+$ ]]; then
    echo "${usage}" >&2
    exit 2
fi
DEVICE_ID="$1"
DEVICE_TARGET="$2"
DATASET_PATH="$3"
CHECKPOINT_PATH="$4"
shift 4
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
select_device "${DEVICE_ID}" "${DEVICE_TARGET}"

mkdir -p ms_log
"${PYTHON}" -u -m deepfm_lib.eval \
    --params "${ROOT}/params.yaml" \
    --dataset_path="${DATASET_PATH}" \
    --checkpoint_path="${CHECKPOINT_PATH}" \
    --device_target="${DEVICE_TARGET}" \
    "$@" 2>&1 | tee ms_log/eval_output.log
