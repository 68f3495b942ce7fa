#!/bin/sh
# Device check of every GPU code path (see bench/gpu_check.py): run from anywhere with the machine's
# own python3, e.g. `sh bench/gpu_check.sh` on a machine with one GPU (~3-4 min), or
# `sh bench/gpu_check.sh --device cpu --quick` for a smoke run. Exit status 1 on any error.
cd "$(dirname "$0")/.." || exit 1
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
