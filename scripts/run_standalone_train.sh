#!/usr/bin/env bash
# Standalone training with the model zoo's script arguments (DEVICE_ID DATASET_PATH).
# Unlike the zoo's script it runs in the foreground and returns training's exit status; the
# log goes to the console and to ms_log/output.log. Extra arguments go to
# `python -m deepfm_lib.train` (e.g. --device_target GPU --set preset=zoo).
set -euo pipefail

usage="usage: bash scripts/run_standalone_train.sh DEVICE_ID DATASET_PATH [train flags...]
  e.g. bash scripts/run_standalone_train.sh 0 data/processed --device_target CPU --set train.epochs=1"
if [[ $# -lt 2 || ! "$1" =~ ^[0-9]+$ ]]; then
    echo "${usage}" >&2
    exit 2
fi
DEVICE_ID="$1"
DATASET_PATH="$2"
shift 2
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
select_device "${DEVICE_ID}" "$(device_flag "$@")"

run_train "$@"
