# Shell functions shared by the sweep scripts (run_cifar_vanilla.sh, run_cifar_distill.sh,
# run_cifar_pairs.sh, run_transfer.sh). Sourced, not run:   . "$SCRIPT_DIR/common.sh"
#
# A sweep script queues its runs with add_run in plain loops and ends with run_sweep, which hands
# them to scripts/sweep.py. The caller sets SCRIPT_DIR and ROOT before sourcing. The variables every
# sweep shares are read here (each overridable by the environment):
#   TRIALS        number of trials: TRIALS=3 runs trials 1, 2, 3 (default 3)
#   EPOCHS        --epochs for every run; empty = the entry script's default
#   EXTRA         extra flags appended to every command, e.g. EXTRA="--device cpu --no_progress"
#   PYTHON        default .venv/bin/python when present, else python3
#   SAVE_FOLDER   --save_folder (default save/ under the repository root)
#   DATA_FOLDER   --data_folder (default data/ under the repository root)
#   GPUS          GPUs to spread the runs over, e.g. GPUS=0,1,2,3 or GPUS=all (each run sees one GPU
#                 through CUDA_VISIBLE_DEVICES); GPU=1 is the same as GPUS=1
#   RUNS_PER_GPU  runs each GPU holds at once (default 1)
#   WORKERS       without GPUS: runs at once on the CPU (default 1), the cores split among them
#   DRY_RUN       DRY_RUN=1 lists the runs, their folders and status, and trains nothing
#   LAUNCHER      local (default: the workers above, on this machine) or slurm: the runs still to do
#                 become one SLURM job array through submitit (scripts/slurm_launch.py; settings from
#                 SLURM_SWEEP_PARTITION, SLURM_SWEEP_GPUS, SLURM_SWEEP_TIME, ..., see the README)
#
# Each run's folder and status come from its entry script (with the run's exact flags, EXTRA
# included): finished runs are skipped, unfinished ones continued with --resume auto, others
# started. A run folder is locked while a process trains it, so sweeps started twice (or on several
# machines sharing the save folder) never train one run twice. A failed run does not stop the
# sweep; Ctrl-C stops it (each run saves a checkpoint first, and the next sweep resumes it).

TRIALS=${TRIALS:-3}
EPOCHS=${EPOCHS:-}
EXTRA=${EXTRA:-}
SAVE_FOLDER=${SAVE_FOLDER:-$ROOT/save}
DATA_FOLDER=${DATA_FOLDER:-$ROOT/data}
GPUS=${GPUS:-${GPU:-}}
RUNS_PER_GPU=${RUNS_PER_GPU:-}
WORKERS=${WORKERS:-}
DRY_RUN=${DRY_RUN:-}
LAUNCHER=${LAUNCHER:-local}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
SWEEP_NAME=$(basename -- "$0")
SWEEP_RUNS=""
TAB=$(printf '\t')

say() { echo "$SWEEP_NAME: $*"; }
die() { echo "$SWEEP_NAME: error: $*" >&2; exit 2; }

case $TRIALS in
    '' | *[!0-9]* | 0) die "TRIALS must be a positive count (TRIALS=3 runs trials 1, 2, 3), got '$TRIALS'." ;;
esac
case $EPOCHS in
    *[!0-9]* | 0) die "EPOCHS must be a positive integer or empty (the script's default), got '$EPOCHS'." ;;
esac

trial_ids() {  # 1 2 ... TRIALS
    _trial=1
    while [ "$_trial" -le "$TRIALS" ]; do
        echo "$_trial"
        _trial=$((_trial + 1))
    done
}

require_file() {  # PATH WHAT HINT
    [ -f "$1" ] || die "$2 '$1' does not exist. $3"
}

# The method names of the registry (distiller_zoo/, one file per method) and their flags, one per
# line: "NAME --distill KEY -r R -a A -b B". Every key has its default weights; KEY+kd (for the
# methods marked sweep_with_kd, e.g. crd+kd) adds the KD term: -a 1.
load_methods() {
    METHOD_TABLE=$("$PYTHON" "$SCRIPT_DIR/sweep.py" --methods) ||
        die "could not list the methods of distiller_zoo/ with PYTHON=$PYTHON (see the error above)."
    ALL_METHODS=$(echo "$METHOD_TABLE" | cut -d' ' -f1 | tr '\n' ' ')
}

method_flags() {  # NAME -> its flags, e.g. crd+kd -> --distill crd -r 1 -a 1 -b 0.8
    echo "$METHOD_TABLE" | while read -r _name _flags; do
        if [ "$_name" = "$1" ]; then echo "$_flags"; fi
    done
}

check_methods() {  # fail early on an unknown name in METHODS
    for _name in $METHODS; do
        [ -n "$(method_flags "$_name")" ] ||
            die "unknown method '$_name' in METHODS. Valid names (one per file in distiller_zoo/; KEY+kd adds" \
                "the KD term): $ALL_METHODS"
    done
}

add_run() {  # SCRIPT ARGS...: queue one run of an entry script, with EPOCHS, the folders and EXTRA added
    [ -z "$EPOCHS" ] || set -- "$@" --epochs "$EPOCHS"
    set -- "$@" --save_folder "$SAVE_FOLDER" --data_folder "$DATA_FOLDER"
    set -f  # split EXTRA into words, without glob expansion
    # shellcheck disable=SC2086
    set -- "$@" $EXTRA
    set +f
    _line=$1
    shift
    for _arg in "$@"; do
        case $_arg in *"$TAB"*) die "an argument contains a tab character: '$_arg'." ;; esac
        _line="$_line$TAB$_arg"
    done
    SWEEP_RUNS="$SWEEP_RUNS$_line
"
}

run_sweep() {  # run (or submit, LAUNCHER=slurm) the queued runs with scripts/sweep.py (it replaces this shell)
    case $DRY_RUN in '' | 0) ;; *) set -- --dry_run ;; esac
    exec "$PYTHON" "$SCRIPT_DIR/sweep.py" --name "$SWEEP_NAME" --gpus "$GPUS" --runs_per_gpu "$RUNS_PER_GPU" \
        --workers "$WORKERS" --launcher "$LAUNCHER" "$@" <<EOF
$SWEEP_RUNS
EOF
}
