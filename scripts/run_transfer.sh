#!/bin/sh
# Transfer a distilled CIFAR-100 student to STL-10 and TinyImageNet (linear probe on the frozen
# features, transfer_student.py), TRIALS trials each: the transfer rows of the CRD/DCD papers.
#
# Usage, from the repository root:   sh scripts/run_transfer.sh
# Prerequisites: the student checkpoint (by default the wrn_40_2 -> wrn_16_2 DCD+KD student of
#   PAIRS=wrn_40_2:wrn_16_2 METHODS=dcd+kd sh scripts/run_cifar_pairs.sh), data/stl10_binary/ and
#   data/tiny-imagenet-200/ (sh data/get_tinyimagenet.sh).
# Environment (defaults below):
#   STUDENT_CKPT the distilled student's checkpoint (--path_s)
#   STUDENT      its architecture (--model_s)
#   DATASETS     target datasets, e.g. DATASETS=stl10
#   TRIALS EPOCHS EXTRA GPUS RUNS_PER_GPU WORKERS DRY_RUN LAUNCHER PYTHON SAVE_FOLDER DATA_FOLDER   see scripts/common.sh
#                (EPOCHS defaults to transfer_student.py's 120)
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
ROOT=$(dirname -- "$SCRIPT_DIR")
STUDENT=${STUDENT:-wrn_16_2}
DATASETS=${DATASETS:-stl10 tinyimagenet}
. "$SCRIPT_DIR/common.sh"
DCD_KD_STUDENT=dcd_cifar100_S_wrn_16_2_T_wrn_40_2_r_1_a_1_b_1_trial_1
STUDENT_CKPT=${STUDENT_CKPT:-$SAVE_FOLDER/student/student_model/$DCD_KD_STUDENT/wrn_16_2_best.pth}

require_file "$STUDENT_CKPT" "The student checkpoint (STUDENT_CKPT)" \
    "Train it with: PAIRS=wrn_40_2:wrn_16_2 METHODS=dcd+kd TRIALS=1 sh scripts/run_cifar_pairs.sh, or set STUDENT_CKPT."
for dataset in $DATASETS; do
    case $dataset in
        stl10 | tinyimagenet) ;;
        *) die "DATASETS entries are stl10 or tinyimagenet, got '$dataset'." ;;
    esac
done

for trial in $(trial_ids); do
    for dataset in $DATASETS; do
        add_run transfer_student.py --path_s "$STUDENT_CKPT" --model_s "$STUDENT" --dataset "$dataset" --trial "$trial"
    done
done
run_sweep
