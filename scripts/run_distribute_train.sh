#!/usr/bin/env bash
# Data-parallel training with the model zoo's script arguments (DEVICE_NUM DATASET_PATH).
# The zoo's third argument, an Ascend rank table, is not needed: the training stage starts
# DEVICE_NUM workers with MindSpore's msrun (targets.<name>.workers, set here through
# --workers), and they find each other over TCP. train.batch_size stays the GLOBAL batch and
# must divide by DEVICE_NUM. Foreground; the log goes to the console and to
# ms_log/output.log, each worker's own log to checkpoint/logs/.
# Extra arguments go to `python -m deepfm_lib.train` (e.g. --device_target GPU).
set -euo pipefail

usage="usage: bash scripts/run_distribute_train.sh DEVICE_NUM DATASET_PATH [train flags...]
  e.g. bash scripts/run_distribute_train.sh 2 data/processed --device_target CPU"
if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
    echo "${usage}" >&2
    exit 2
fi
DEVICE_NUM="$1"
DATASET_PATH="$2"
shift 2
if [[ $# -gt 0 && "$1" == *.json ]]; then
    echo "note: ignoring the rank table $1 (msrun needs none)" >&2
    shift
fi
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

run_train --workers="${DEVICE_NUM}" "$@"
