#!/bin/sh
# Reproduce one published table: every cell of recipes/<table>.toml (the published number and the
# settings it was obtained with) x TRIALS trials, with train_student.py --recipe, then print the table
# (published beside ours, python -m reporting.reproduction --table <table>).
#
# Usage, from the repository root:   sh scripts/reproduce.sh dkd-cifar100
# The tables, their cells, sources:   sh scripts/reproduce.sh --list
# What it would run, and how long:    DRY_RUN=1 sh scripts/reproduce.sh dkd-cifar100
# Some cells only:                    PAIRS="resnet56:resnet20" METHODS="kd crd+kd" sh scripts/reproduce.sh crd-cifar100
# Environment:
#   PAIRS        teacher:student pairs of the table to run (default: all)
#   METHODS      methods of the table to run, as the table names them (KEY or KEY+kd; default: all)
#   TRIALS EPOCHS EXTRA GPUS RUNS_PER_GPU WORKERS DRY_RUN LAUNCHER PYTHON SAVE_FOLDER DATA_FOLDER   see scripts/common.sh
# LAUNCHER=slurm submits the runs as a SLURM job array and returns (README, On a SLURM cluster).
# Teachers: <SAVE_FOLDER>/models/<teacher>_vanilla/ckpt_epoch_240.pth (sh scripts/fetch_pretrained_teachers.sh).
# EPOCHS (or a flag in EXTRA) that differs from a recipe is recorded as a departure, and the table
# then gives those rows no verdict. Finished runs are skipped and unfinished ones resumed.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
ROOT=$(dirname -- "$SCRIPT_DIR")
. "$SCRIPT_DIR/common.sh"
cd "$ROOT"

case ${1:-} in
    '') die "name a table, e.g. sh scripts/reproduce.sh dkd-cifar100 (sh scripts/reproduce.sh --list names them)." ;;
    --list) exec "$PYTHON" -m recipes --list ;;
    -*) die "unknown option '$1': sh scripts/reproduce.sh <table> | --list." ;;
esac
TABLE=$1
PAIRS=${PAIRS:-}
METHODS=${METHODS:-}
CELLS=$("$PYTHON" -m recipes --cells "$TABLE" --pairs "$PAIRS" --methods "$METHODS") || exit 2

for trial in $(trial_ids); do
    for cell in $CELLS; do
        add_run train_student.py --recipe "$cell" --trial "$trial"
    done
done
status=0
(run_sweep) || status=$?
case $DRY_RUN:$LAUNCHER in
    :slurm | 0:slurm) echo "When the job array is done: $PYTHON -m reporting.reproduction $SAVE_FOLDER --table $TABLE" ;;
    :* | 0:*) "$PYTHON" -m reporting.reproduction "$SAVE_FOLDER" --table "$TABLE" ;;
    *) "$PYTHON" -m recipes --estimate "$TABLE" --pairs "$PAIRS" --methods "$METHODS" --trials "$TRIALS" \
           ${EPOCHS:+--epochs "$EPOCHS"} ;;
esac
exit "$status"
