#!/bin/sh
# The teacher -> student pairs of the CRD paper tables (same and cross architecture) on CIFAR-100,
# for a list of methods, TRIALS trials each.
#
# Usage, from the repository root:   sh scripts/run_cifar_pairs.sh
# Smoke run:                          EPOCHS=1 TRIALS=1 PAIRS="resnet56:resnet20" sh scripts/run_cifar_pairs.sh
# Environment (defaults below):
#   METHODS      method names as in run_cifar_distill.sh (KEY or KEY+kd)
#   PAIRS        teacher:student pairs (default: SAME_ARCH_PAIRS then CROSS_ARCH_PAIRS)
#   TEACHER_DIR  where the teachers are: <TEACHER_DIR>/<teacher>_vanilla/ckpt_epoch_240.pth
#   TRIALS EPOCHS EXTRA GPUS RUNS_PER_GPU WORKERS DRY_RUN LAUNCHER PYTHON SAVE_FOLDER DATA_FOLDER   see scripts/common.sh
# MobileNetV2/ShuffleV1/ShuffleV2 students get learning rate 0.01 (train_student.py's default).
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
ROOT=$(dirname -- "$SCRIPT_DIR")
METHODS=${METHODS:-kd crd dcd rrd}
SAME_ARCH_PAIRS=${SAME_ARCH_PAIRS:-wrn_40_2:wrn_16_2 wrn_40_2:wrn_40_1 resnet56:resnet20 resnet110:resnet20 \
resnet110:resnet32 resnet32x4:resnet8x4 vgg13:vgg8}
CROSS_ARCH_PAIRS=${CROSS_ARCH_PAIRS:-vgg13:MobileNetV2 ResNet50:MobileNetV2 ResNet50:vgg8 resnet32x4:ShuffleV1 \
resnet32x4:ShuffleV2 wrn_40_2:ShuffleV1}
PAIRS=${PAIRS:-$SAME_ARCH_PAIRS $CROSS_ARCH_PAIRS}
TEACHER_DIR=${TEACHER_DIR:-$ROOT/save/models}
. "$SCRIPT_DIR/common.sh"

missing=""
for pair in $PAIRS; do
    case $pair in
        ?*:?*) ;;
        *) die "PAIRS entries are teacher:student, e.g. resnet56:resnet20; got '$pair'." ;;
    esac
    teacher_path=$TEACHER_DIR/${pair%%:*}_vanilla/ckpt_epoch_240.pth
    [ -f "$teacher_path" ] || missing="$missing $teacher_path"
done
[ -z "$missing" ] || die "missing teacher checkpoints:$missing. Fetch them with" \
    "'sh scripts/fetch_pretrained_teachers.sh', set TEACHER_DIR, or choose PAIRS."
load_methods
check_methods

for trial in $(trial_ids); do
    for pair in $PAIRS; do
        teacher_path=$TEACHER_DIR/${pair%%:*}_vanilla/ckpt_epoch_240.pth
        model_s=${pair#*:}
        for name in $METHODS; do
            add_run train_student.py --path_t "$teacher_path" --model_s "$model_s" $(method_flags "$name") --trial "$trial"
        done
    done
done
run_sweep
