#!/bin/sh
# The teacher -> student pairs of the CRD paper tables (same and cross architecture) on CIFAR-100,
# for a list of methods, TRIALS trials each.
#
# Usage, from the repository root:   sh scripts/run_cifar_pairs.sh
# Smoke run:                          EPOCHS=1 TRIALS=1 PAIRS="resnet56:resnet20" sh scripts/run_cifar_pairs.sh
# Environment (defaults below):
#   METHODS      --distill keys, optionally KEY+kd (weights as in run_cifar_distill.sh)
#   PAIRS        teacher:student pairs (default: SAME_ARCH_PAIRS then CROSS_ARCH_PAIRS)
#   TEACHER_DIR  where the teachers are: <TEACHER_DIR>/<teacher>_vanilla/ckpt_epoch_240.pth
#   TRIALS EPOCHS GPU EXTRA PYTHON SAVE_FOLDER DATA_FOLDER   see scripts/common.sh
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
DEFAULT_EPOCHS=240  # train_student.py's --epochs default
. "$SCRIPT_DIR/common.sh"

check_methods
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
say "pairs: $PAIRS; methods: $METHODS; trials 1..$TRIALS, $(epochs_text) -> $SAVE_FOLDER"

for trial in $(trial_ids); do
    for pair in $PAIRS; do
        model_t=${pair%%:*}
        model_s=${pair#*:}
        teacher_path=$TEACHER_DIR/${model_t}_vanilla/ckpt_epoch_240.pth
        for name in $METHODS; do
            method_weights "$name"
            run_dir=$(student_run_dir "$METHOD_KEY" "$model_s" "$model_t" "$METHOD_R" "$METHOD_A" "$METHOD_B" "$trial")
            run_if_needed "$(basename -- "$run_dir")" "$(run_status "$run_dir" "$model_s")" train_student.py \
                --path_t "$teacher_path" --distill "$METHOD_KEY" --model_s "$model_s" \
                -r "$METHOD_R" -a "$METHOD_A" -b "$METHOD_B" --trial "$trial"
        done
    done
done
sweep_finish
