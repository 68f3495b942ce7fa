# Shell functions shared by the sweep scripts (run_cifar_vanilla.sh, run_cifar_distill.sh,
# run_cifar_pairs.sh, run_transfer.sh). Sourced, not run:   . "$SCRIPT_DIR/common.sh"
#
# The caller sets SCRIPT_DIR, ROOT, DEFAULT_EPOCHS (its entry script's --epochs default) and its own
# variables before sourcing. The variables every sweep shares are read here (each overridable by
# the environment):
#   TRIALS       number of trials: TRIALS=3 runs trials 1, 2, 3 (default 3)
#   EPOCHS       --epochs for every run; empty = the entry script's default (DEFAULT_EPOCHS)
#   GPU          exported as CUDA_VISIBLE_DEVICES when set
#   EXTRA        extra flags appended to every command, e.g. EXTRA="--device cpu --no_progress"
#                (set the number of epochs with EPOCHS, not EXTRA: the skip check reads EPOCHS)
#   PYTHON       default .venv/bin/python when present, else python3
#   SAVE_FOLDER  --save_folder (default save/ under the repository root)
#   DATA_FOLDER  --data_folder (default data/ under the repository root)
#
# Each run is skipped when its last checkpoint says it is finished, continued with --resume auto
# when it is unfinished, and started otherwise. A failed run does not stop the sweep; Ctrl-C does
# (the run saves a checkpoint first, and the next sweep resumes it).

TRIALS=${TRIALS:-3}
EPOCHS=${EPOCHS:-}
GPU=${GPU:-}
EXTRA=${EXTRA:-}
SAVE_FOLDER=${SAVE_FOLDER:-$ROOT/save}
DATA_FOLDER=${DATA_FOLDER:-$ROOT/data}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
SWEEP_NAME=$(basename -- "$0")
SWEEP_RAN=0
SWEEP_SKIPPED=0
SWEEP_FAILED=""

say() { echo "$SWEEP_NAME: $*"; }
warn() { echo "$SWEEP_NAME: error: $*" >&2; }
die() { warn "$@"; exit 2; }

case $TRIALS in
    '' | *[!0-9]* | 0) die "TRIALS must be a positive count (TRIALS=3 runs trials 1, 2, 3), got '$TRIALS'." ;;
esac
case $EPOCHS in
    *[!0-9]* | 0) die "EPOCHS must be a positive integer or empty (the script's default), got '$EPOCHS'." ;;
esac
if [ -n "$GPU" ]; then
    CUDA_VISIBLE_DEVICES=$GPU
    export CUDA_VISIBLE_DEVICES
fi

trial_ids() {  # 1 2 ... TRIALS
    _trial=1
    while [ "$_trial" -le "$TRIALS" ]; do
        echo "$_trial"
        _trial=$((_trial + 1))
    done
}

planned_epochs() { echo "${EPOCHS:-$DEFAULT_EPOCHS}"; }

epochs_text() {  # '1 epoch' / '240 epochs' for messages
    if [ "$(planned_epochs)" = 1 ]; then echo "1 epoch"; else echo "$(planned_epochs) epochs"; fi
}

fmt_g() { LC_ALL=C printf '%g' "$1"; }  # a loss weight as Python's f"{x:g}" writes it in folder names

# method_weights NAME: set METHOD_KEY, METHOD_R, METHOD_A, METHOD_B for a sweep method name:
# a --distill key with the papers' weights (kd: -r 0.1 -a 0.9 -b 0; others -a 0 -b
# <default>), or KEY+kd for the "+KD" variants (-r 1 -a 1 -b <default>; crd+kd is -r 1 -a 1 -b 0.8).
method_weights() {
    METHOD_KEY=${1%+kd}
    METHOD_R=1
    METHOD_A=0
    case $METHOD_KEY in
        kd) METHOD_R=0.1; METHOD_A=0.9; METHOD_B=0 ;;
        hint) METHOD_B=100 ;;
        attention) METHOD_B=1000 ;;
        similarity) METHOD_B=3000 ;;
        correlation) METHOD_B=0.02 ;;
        vid | rkd | abound | rrd | dcd) METHOD_B=1 ;;
        crd) METHOD_B=0.8 ;;
        pkt) METHOD_B=30000 ;;
        factor) METHOD_B=200 ;;
        fsp | nst) METHOD_B=50 ;;
        kdsvd) METHOD_B=1 ;;
        reviewkd) METHOD_B=5 ;;
        simkd) METHOD_R=0; METHOD_B=1 ;;
        catkd) METHOD_B=15 ;;
        *) return 1 ;;
    esac
    if [ "$METHOD_KEY" != "$1" ]; then
        [ "$METHOD_KEY" != kd ] || return 1
        METHOD_A=1
    fi
}

check_methods() {  # fail early on an unknown name in METHODS
    for _name in $METHODS; do
        method_weights "$_name" || die "unknown method '$_name' in METHODS. Use --distill keys (kd hint attention" \
            "similarity correlation vid crd rkd pkt abound factor fsp nst rrd dcd kdsvd reviewkd simkd catkd)," \
            "optionally with '+kd' (e.g. crd+kd)."
    done
}

require_file() {  # PATH WHAT HINT
    [ -f "$1" ] || die "$2 '$1' does not exist. $3"
}

teacher_arch_of() {  # teacher checkpoint -> its architecture (as train_student.py reads it)
    "$PYTHON" "$SCRIPT_DIR/run_status.py" --teacher_arch "$1" || exit 2
}

student_run_dir() {  # KEY MODEL_S MODEL_T R A B TRIAL -> train_student.py's run folder
    _weights="r_$(fmt_g "$4")_a_$(fmt_g "$5")_b_$(fmt_g "$6")"
    echo "$SAVE_FOLDER/student/student_model/${1}_cifar100_S_${2}_T_${3}_${_weights}_trial_${7}"
}

# run_if_needed LABEL STATUS SCRIPT ARGS...: skip / resume / start one run of SCRIPT (an entry
# script in the repository root) with ARGS plus the shared flags.
run_if_needed() {
    _label=$1
    _status=$2
    _script=$3
    shift 3
    case $_status in
        finished)
            say "skip $_label: finished ($(epochs_text))"
            SWEEP_SKIPPED=$((SWEEP_SKIPPED + 1))
            return 0
            ;;
        unfinished)
            say "resume $_label: unfinished, continuing with --resume auto"
            set -- "$@" --resume auto
            ;;
        missing) say "run $_label" ;;
        *) die "could not read the status of $_label (got '$_status'); is PYTHON=$PYTHON working?" ;;
    esac
    [ -z "$EPOCHS" ] || set -- "$@" --epochs "$EPOCHS"
    set -- "$@" --save_folder "$SAVE_FOLDER" --data_folder "$DATA_FOLDER"
    set -f  # split EXTRA into words, without glob expansion
    # shellcheck disable=SC2086
    set -- "$@" $EXTRA
    set +f
    echo "+ $PYTHON $_script $*"
    _rc=0
    "$PYTHON" "$ROOT/$_script" "$@" || _rc=$?
    case $_rc in
        0) SWEEP_RAN=$((SWEEP_RAN + 1)) ;;
        130 | 143)
            say "interrupted during $_label; run the same command again to resume it."
            exit "$_rc"
            ;;
        *)
            warn "$_label failed (exit status $_rc); continuing with the next run."
            SWEEP_FAILED="$SWEEP_FAILED $_label"
            ;;
    esac
}

run_status() {  # RUN_DIR MODEL -> finished | unfinished | missing
    "$PYTHON" "$SCRIPT_DIR/run_status.py" "$1" "$2" "$(planned_epochs)" || echo error
}

sweep_finish() {  # print the tally; exit 1 when any run failed
    say "done: $SWEEP_RAN run, $SWEEP_SKIPPED skipped (already finished), failed:${SWEEP_FAILED:- none}"
    if [ -n "$SWEEP_FAILED" ]; then
        exit 1
    fi
    say "summarize with: $PYTHON $SCRIPT_DIR/summarize.py $SAVE_FOLDER"
}
