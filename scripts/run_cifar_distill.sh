#!/bin/sh
# Every distillation method of distiller_zoo/ (plus the KEY+kd variants, e.g. crd+kd) for one
# teacher -> student pair on CIFAR-100, TRIALS trials each: the rows of the CRD/DCD/RRD tables.
#
# Usage, from the repository root:   sh scripts/run_cifar_distill.sh
# Smoke run (1 epoch, 1 trial):       EPOCHS=1 TRIALS=1 sh scripts/run_cifar_distill.sh
# Four GPUs, two runs on each:        GPUS=0,1,2,3 RUNS_PER_GPU=2 sh scripts/run_cifar_distill.sh
# A SLURM job array, one run a task:  LAUNCHER=slurm SLURM_SWEEP_PARTITION=gpu sh scripts/run_cifar_distill.sh
# Environment (defaults below):
#   TEACHER      teacher checkpoint (fetch it with sh scripts/fetch_pretrained_teachers.sh)
#   STUDENT      student architecture
#   METHODS      subset, e.g. METHODS="kd crd dcd+kd" (default: every method, in the tables' order)
#   TRIALS EPOCHS EXTRA GPUS RUNS_PER_GPU WORKERS DRY_RUN LAUNCHER PYTHON SAVE_FOLDER DATA_FOLDER   see scripts/common.sh
# Weights are each method's defaults (-r/-a/-b, declared in its file); KEY+kd adds -a 1.
# Finished runs are skipped and unfinished ones resumed, so the script can be re-run at will.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
ROOT=$(dirname -- "$SCRIPT_DIR")
TEACHER=${TEACHER:-$ROOT/save/models/resnet32x4_vanilla/ckpt_epoch_240.pth}
STUDENT=${STUDENT:-resnet8x4}
. "$SCRIPT_DIR/common.sh"
load_methods
METHODS=${METHODS:-$ALL_METHODS}
check_methods
require_file "$TEACHER" "The teacher checkpoint (TEACHER)" \
    "Fetch the published teachers with 'sh scripts/fetch_pretrained_teachers.sh', or set TEACHER=<path>."

for trial in $(trial_ids); do
    for name in $METHODS; do
        add_run train_student.py --path_t "$TEACHER" --model_s "$STUDENT" $(method_flags "$name") --trial "$trial"
    done
done
run_sweep
