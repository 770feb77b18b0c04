# Shared by the run_*.sh scripts (sourced, not run): the interpreter and import path.
# Outputs land in the current folder, as with the model zoo's scripts; the repository is
# found from this file's location so the scripts work from any folder.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
# The interpreter: $PYTHON if set, else the project's .venv, else python3 from PATH. Its
# folder goes first on PATH: msrun lives there and starts the 'python' it finds on PATH.
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "${ROOT}/.venv/bin/python" ]]; then
        PYTHON="${ROOT}/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi
PYTHON="$(command -v "${PYTHON}")"
export PATH="$(dirname "${PYTHON}"):${PATH}"

# The zoo selects the card with DEVICE_ID; MindSpore 2.10 picks device 0 of the visible
# ones unless told otherwise, so the card is made the only visible one.
select_device() {
    local device_id="$1" target="$2"
    export DEVICE_ID="${device_id}"
    case "${target}" in
        GPU) export CUDA_VISIBLE_DEVICES="${device_id}" ;;
        Ascend) export ASCEND_RT_VISIBLE_DEVICES="${device_id}" ;;
    esac
}

# The value of --device_target among the given arguments (either spelling), if any.
device_flag() {
    local prev=""
    for arg in "$@"; do
        case "${arg}" in
            --device_target=*) echo "${arg#--device_target=}"; return ;;
        esac
        if [[ "${prev}" == "--device_target" ]]; then echo "${arg}"; return; fi
        prev="${arg}"
    done
}

# The zoo's train.py call, with its flags; extra arguments are passed on.
run_train() {
    mkdir -p ms_log
    "${PYTHON}" -u -m deepfm_lib.train \
        --params "${ROOT}/params.yaml" \
        --dataset_path="${DATASET_PATH}" \
        --ckpt_path="checkpoint" \
        --eval_file_name="auc.log" \
        --loss_file_name="loss.log" \
        --do_eval=True \
        "$@" 2>&1 | tee ms_log/output.log
}
