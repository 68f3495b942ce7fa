#!/bin/sh
# ImageNet distillation on all GPUs of this machine with torchrun (one process per GPU):
# ResNet-34 -> ResNet-18 by default, or ResNet-50 -> MobileNet-V2 with PAIR=resnet50-mobilenetv2.
#
# Usage, from the repository root:
#   TEACHER=~/.cache/torch/hub/checkpoints/resnet34-b627a593.pth sh scripts/run_imagenet_distill.sh
#   PAIR=resnet50-mobilenetv2 TEACHER=/path/to/resnet50-0676ba61.pth METHOD=crd sh scripts/run_imagenet_distill.sh
# Smoke run on 2 CPU processes:   NPROC=2 EPOCHS=1 EXTRA="--device cpu --image_size 64" sh scripts/run_imagenet_distill.sh
# On a SLURM cluster, 8 GPUs x 2 nodes per run, requeued at the time limit:
#   LAUNCHER=slurm SLURM_SWEEP_GPUS=8 SLURM_SWEEP_NODES=2 TEACHER=... sh scripts/run_imagenet_distill.sh
# Environment (defaults below):
#   TEACHER      torchvision state_dict file (e.g. resnet34-b627a593.pth) or a checkpoint of this repo
#   PAIR         resnet34-resnet18 | resnet50-mobilenetv2 (sets the student; the teacher is read from TEACHER)
#   METHOD       --distill key; WEIGHTS overrides its -r/-a/-b, e.g. WEIGHTS="-r 1 -a 0.9 -b 0.8"
#   NPROC        processes (default: the number of GPUs nvidia-smi lists, else 1)
#   BATCH_SIZE   per process (default 64); the learning rate is 0.1 x BATCH_SIZE/256 x NPROC (--lr_scaling linear)
#   EPOCHS       default: the ImageNet recipe's 100 (decay at 30, 60, 90; weight decay 1e-4)
#   TRIAL DATA_FOLDER SAVE_FOLDER PYTHON EXTRA (extra flags for train_student.py)
#   LAUNCHER     local (default: torchrun here) or slurm: the run becomes a SLURM job through submitit
#                (scripts/common.sh, scripts/slurm_launch.py), torchrun inside it with SLURM_SWEEP_GPUS
#                processes (default 8) on each of SLURM_SWEEP_NODES nodes, SLURM_SWEEP_CPUS (default 8 per
#                GPU) cores and SLURM_SWEEP_MEM (default 0: all) memory per node; NPROC does not apply
# The images are read from $DATA_FOLDER/imagenet/{train,val}/<wnid>/*.JPEG. Re-running the script
# continues an unfinished run (--resume auto); Ctrl-C or SIGTERM saves a checkpoint first.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
ROOT=$(dirname -- "$SCRIPT_DIR")
PAIR=${PAIR:-resnet34-resnet18}
METHOD=${METHOD:-kd}
WEIGHTS=${WEIGHTS:-}
BATCH_SIZE=${BATCH_SIZE:-64}
EPOCHS=${EPOCHS:-}
TRIAL=${TRIAL:-1}
DATA_FOLDER=${DATA_FOLDER:-$ROOT/data}
SAVE_FOLDER=${SAVE_FOLDER:-$ROOT/save}
EXTRA=${EXTRA:-}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
if [ -z "${NPROC:-}" ]; then
    NPROC=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    [ "$NPROC" -gt 0 ] 2>/dev/null || NPROC=1
fi

case $PAIR in
    resnet34-resnet18) STUDENT=tv_resnet18 ;;
    resnet50-mobilenetv2) STUDENT=tv_mobilenet_v2 ;;
    *) echo "run_imagenet_distill.sh: error: PAIR must be resnet34-resnet18 or resnet50-mobilenetv2, got '$PAIR'." >&2
       exit 2 ;;
esac
if [ -z "${TEACHER:-}" ] || [ ! -f "$TEACHER" ]; then
    echo "run_imagenet_distill.sh: error: set TEACHER to the teacher's weights, e.g. torchvision's" \
         "resnet34-b627a593.pth (download it once on a machine with internet access; nothing is fetched" \
         "at run time). Got '${TEACHER:-}'." >&2
    exit 2
fi

if [ "${LAUNCHER:-local}" != local ]; then  # the sweep machinery: DRY_RUN, run_status.py, requeue
    SLURM_SWEEP_GPUS=${SLURM_SWEEP_GPUS:-8}
    SLURM_SWEEP_CPUS=${SLURM_SWEEP_CPUS:-$((SLURM_SWEEP_GPUS * 8))}
    SLURM_SWEEP_MEM=${SLURM_SWEEP_MEM:-0}  # sbatch --mem=0: all of each node's memory
    export SLURM_SWEEP_GPUS SLURM_SWEEP_CPUS SLURM_SWEEP_MEM
    TRIALS=1
    . "$SCRIPT_DIR/common.sh"
    # shellcheck disable=SC2086  # WEIGHTS is a word list
    add_run train_student.py --dataset imagenet --path_t "$TEACHER" --model_s "$STUDENT" --distill "$METHOD" \
        --batch_size "$BATCH_SIZE" --trial "$TRIAL" --lr_scaling linear --sync_bn --channels_last $WEIGHTS
    run_sweep
fi

set -- --dataset imagenet --data_folder "$DATA_FOLDER" --save_folder "$SAVE_FOLDER" --path_t "$TEACHER" \
    --model_s "$STUDENT" --distill "$METHOD" --batch_size "$BATCH_SIZE" --trial "$TRIAL" --lr_scaling linear \
    --sync_bn --channels_last --resume auto
[ -n "$EPOCHS" ] && set -- "$@" --epochs "$EPOCHS"
echo "run_imagenet_distill.sh: $METHOD, $PAIR, $NPROC process(es) x $BATCH_SIZE images -> $SAVE_FOLDER"
# shellcheck disable=SC2086  # WEIGHTS and EXTRA are word lists
exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" "$ROOT/train_student.py" "$@" \
    $WEIGHTS $EXTRA
