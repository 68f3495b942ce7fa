#!/bin/sh
# Download the published CIFAR-100 teachers of RepDistiller (CRD paper) into
#   <SAVE_DIR>/<arch>_vanilla/ckpt_epoch_240.pth
# for arch in: wrn_40_2 resnet56 resnet110 resnet32x4 vgg13 ResNet50.
#
# Usage, from the repository root:   sh scripts/fetch_pretrained_teachers.sh
# Environment:
#   TEACHER_BASE_URL  default http://shape2prog.csail.mit.edu/repo (RepDistiller's historical host);
#                     files are fetched from $TEACHER_BASE_URL/<arch>_vanilla/ckpt_epoch_240.pth,
#                     so point it at any mirror with that layout
#   SAVE_DIR          default save/models under the repository root
#   TEACHERS          a subset, e.g. TEACHERS="resnet56 vgg13"
#   PYTHON            default .venv/bin/python when present, else python3
#
# A file already present and loadable is skipped. Downloads go to <file>.part (resumed on the
# next run when the server allows it) and are renamed into place only after they load, with the
# project's own loader, strictly into model_dict[arch](num_classes=100). A file that does not load
# is deleted. Every teacher is tried; the exit status is 1 when any of them failed.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
ROOT=$(dirname -- "$SCRIPT_DIR")
BASE_URL=${TEACHER_BASE_URL:-http://shape2prog.csail.mit.edu/repo}
BASE_URL=${BASE_URL%/}
SAVE_DIR=${SAVE_DIR:-$ROOT/save/models}
ALL_TEACHERS="wrn_40_2 resnet56 resnet110 resnet32x4 vgg13 ResNet50"
TEACHERS=${TEACHERS:-$ALL_TEACHERS}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

say() { echo "fetch_pretrained_teachers.sh: $*"; }
warn() { echo "fetch_pretrained_teachers.sh: error: $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# Expected sha256 of each published file. We do not know them (the original host is gone and
# no checksums were published), so they are left empty and each file is verified by loading it
# strictly into its architecture instead. Fill one in to have it checked as well.
expected_sha256() {
    case $1 in
        wrn_40_2) echo "" ;;
        resnet56) echo "" ;;
        resnet110) echo "" ;;
        resnet32x4) echo "" ;;
        vgg13) echo "" ;;
        ResNet50) echo "" ;;
        *) echo "" ;;
    esac
}

sha256_of() {
    if have sha256sum; then
        sha256sum "$1" | cut -d' ' -f1
    elif have shasum; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
    fi
}

download() {  # URL PART: fetch URL into PART, resuming a partial file where the server allows it
    if have curl; then
        if [ -t 2 ]; then progress=--progress-bar; else progress=--silent; fi
        status=0
        curl --fail --location --show-error $progress --retry 3 --retry-delay 2 -C - -o "$2" "$1" || status=$?
        if [ "$status" -eq 33 ]; then  # the server cannot resume: start over
            rm -f "$2"
            status=0
            curl --fail --location --show-error $progress --retry 3 --retry-delay 2 -o "$2" "$1" || status=$?
        fi
        return "$status"
    elif have wget; then
        wget -c -t 3 -O "$2" "$1"
    else
        warn "neither curl nor wget is installed; download $1 to ${2%.part} yourself."
        return 127
    fi
}

valid() {  # FILE ARCH [URL]: the sha256 (when known) matches and the file loads into ARCH
    expected=$(expected_sha256 "$2")
    if [ -n "$expected" ]; then
        actual=$(sha256_of "$1")
        if [ "$actual" != "$expected" ]; then
            echo "verify_checkpoint: error: sha256 of $1 is $actual, expected $expected." >&2
            return 1
        fi
    fi
    "$PYTHON" "$SCRIPT_DIR/verify_checkpoint.py" "$1" "$2" >/dev/null
}

mkdir -p "$SAVE_DIR" || { warn "cannot create SAVE_DIR=$SAVE_DIR"; exit 1; }
fetched=""
present=""
failed=""
for arch in $TEACHERS; do
    case " $ALL_TEACHERS " in
        *" $arch "*) ;;
        *) say "note: '$arch' is not one of the published teachers ($ALL_TEACHERS); trying anyway." ;;
    esac
    dest=$SAVE_DIR/${arch}_vanilla/ckpt_epoch_240.pth
    url=$BASE_URL/${arch}_vanilla/ckpt_epoch_240.pth
    if [ -f "$dest" ]; then
        if valid "$dest" "$arch"; then
            say "skip $arch: already present and valid ($dest)"
            present="$present $arch"
            continue
        fi
        say "$dest is not a valid $arch checkpoint (see above); downloading it again."
        rm -f "$dest"
    fi
    mkdir -p "$(dirname -- "$dest")"
    part=$dest.part
    say "downloading $arch from $url"
    if ! download "$url" "$part"; then
        [ -s "$part" ] || rm -f "$part"  # a non-empty partial file is kept: the next run resumes it
        rmdir "$(dirname -- "$dest")" 2>/dev/null || true
        warn "$arch: downloading $url failed (missing on the server, or the network is down)." \
            "Check TEACHER_BASE_URL ($BASE_URL), or put the file at $dest yourself."
        failed="$failed $arch"
        continue
    fi
    if ! valid "$part" "$arch"; then
        rm -f "$part"
        rmdir "$(dirname -- "$dest")" 2>/dev/null || true
        warn "$arch: the file downloaded from $url is not a valid $arch checkpoint (see above), so it was" \
            "deleted. The mirror may hold a truncated or wrong file; run the script again, or set" \
            "TEACHER_BASE_URL to another mirror."
        failed="$failed $arch"
        continue
    fi
    mv -f "$part" "$dest"
    say "ok $arch: $dest"
    fetched="$fetched $arch"
done

say "summary: fetched:${fetched:- none}; already present:${present:- none}; failed:${failed:- none}"
if [ -n "$failed" ]; then
    warn "some teachers could not be fetched:$failed"
    exit 1
fi
say "all teachers are in $SAVE_DIR"
