#!/bin/sh
# All distillation methods (plus the CRD+KD, RRD+KD and DCD+KD variants) for one
# teacher -> student pair on CIFAR-100, TRIALS trials each: the rows of the CRD/DCD/RRD tables.
#
# Usage, from the repository root:   sh scripts/run_cifar_distill.sh
# Smoke run (1 epoch, 1 trial):       EPOCHS=1 TRIALS=1 sh scripts/run_cifar_distill.sh
# Environment (defaults below):
#   TEACHER      teacher checkpoint (fetch it with sh scripts/fetch_pretrained_teachers.sh)
#   STUDENT      student architecture
#   METHODS      subset, e.g. METHODS="kd crd dcd+kd"
#   TRIALS EPOCHS GPU EXTRA PYTHON SAVE_FOLDER DATA_FOLDER   see scripts/common.sh
# Weights, as in the papers: kd -r 0.1 -a 0.9 -b 0; every other key -r 1 -a 0 -b <its default>;
# KEY+kd -r 1 -a 1 -b <its default> (crd+kd: -b 0.8; dcd+kd, rrd+kd: -b 1).
# Finished runs are skipped and unfinished ones resumed, so the script can be re-run at will.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
ROOT=$(dirname -- "$SCRIPT_DIR")
TEACHER=${TEACHER:-$ROOT/save/models/resnet32x4_vanilla/ckpt_epoch_240.pth}
STUDENT=${STUDENT:-resnet8x4}
ALL_METHODS="kd hint attention similarity correlation vid rkd pkt abound factor fsp nst crd crd+kd rrd rrd+kd dcd dcd+kd kdsvd reviewkd"
METHODS=${METHODS:-$ALL_METHODS}
DEFAULT_EPOCHS=240  # train_student.py's --epochs default
. "$SCRIPT_DIR/common.sh"

check_methods
require_file "$TEACHER" "The teacher checkpoint (TEACHER)" \
    "Fetch the published teachers with 'sh scripts/fetch_pretrained_teachers.sh', or set TEACHER=<path>."
MODEL_T=$(teacher_arch_of "$TEACHER") || exit 2
say "$MODEL_T -> $STUDENT, methods: $METHODS; trials 1..$TRIALS, $(epochs_text) -> $SAVE_FOLDER"

for trial in $(trial_ids); do
    for name in $METHODS; do
        method_weights "$name"
        run_dir=$(student_run_dir "$METHOD_KEY" "$STUDENT" "$MODEL_T" "$METHOD_R" "$METHOD_A" "$METHOD_B" "$trial")
        run_if_needed "$(basename -- "$run_dir")" "$(run_status "$run_dir" "$STUDENT")" train_student.py \
            --path_t "$TEACHER" --distill "$METHOD_KEY" --model_s "$STUDENT" \
            -r "$METHOD_R" -a "$METHOD_A" -b "$METHOD_B" --trial "$trial"
    done
done
sweep_finish
