#!/bin/sh
# Cross-entropy training on CIFAR-100 of the six teachers and of the students trained from scratch
# (the "vanilla student" column of the CRD/DCD/RRD tables), TRIALS trials each.
#
# Usage, from the repository root:   sh scripts/run_cifar_vanilla.sh
# Smoke run:                          EPOCHS=1 TRIALS=1 MODELS="resnet8x4" sh scripts/run_cifar_vanilla.sh
# Environment (defaults below):
#   MODELS       architectures to train (default: TEACHER_MODELS then STUDENT_MODELS)
#   TRIALS EPOCHS EXTRA GPUS RUNS_PER_GPU WORKERS DRY_RUN LAUNCHER PYTHON SAVE_FOLDER DATA_FOLDER   see scripts/common.sh
# Runs land in <SAVE_FOLDER>/models/<model>_vanilla_trial_<t>/ (train_teacher.py --trial t), so
# they never touch the fetched published teachers in <model>_vanilla/. To distil from your own
# teacher: TEACHER=save/models/resnet32x4_vanilla_trial_1/resnet32x4_last.pth sh scripts/run_cifar_distill.sh
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
ROOT=$(dirname -- "$SCRIPT_DIR")
TEACHER_MODELS=${TEACHER_MODELS:-wrn_40_2 resnet56 resnet110 resnet32x4 vgg13 ResNet50}
STUDENT_MODELS=${STUDENT_MODELS:-wrn_16_2 wrn_40_1 resnet20 resnet32 resnet8x4 vgg8 MobileNetV2 ShuffleV1 ShuffleV2}
MODELS=${MODELS:-$TEACHER_MODELS $STUDENT_MODELS}
. "$SCRIPT_DIR/common.sh"

for trial in $(trial_ids); do
    for model in $MODELS; do
        add_run train_teacher.py --model "$model" --trial "$trial"
    done
done
run_sweep
