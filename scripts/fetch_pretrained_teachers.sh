#!/bin/sh
# Fetch the published CIFAR-100 teachers of RepDistiller (CRD paper) into
#   <SAVE_DIR>/<arch>_vanilla/ckpt_epoch_240.pth
# for arch in: wrn_40_2 resnet56 resnet110 resnet32x4 vgg13 ResNet50.
#
# Usage, from the repository root:   sh scripts/fetch_pretrained_teachers.sh
# Environment:
#   TEACHERS_URL  where the files come from (one source; nothing else is tried):
#                 - an archive (.tar, .tar.gz, .tgz) holding <folder>/<arch>_vanilla/ckpt_epoch_240.pth;
#                   default: mdistiller's release of the same RepDistiller files,
#                   https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar
#                 - or a folder URL holding <arch>_vanilla/ckpt_epoch_240.pth, e.g. RepDistiller's original
#                   host http://shape2prog.csail.mit.edu/repo (offline since 2022) or any mirror of it
#                   (TEACHER_BASE_URL, the earlier name of this form, still works)
#   SAVE_DIR      default save/models under the repository root
#   TEACHERS      a subset, e.g. TEACHERS="resnet56 vgg13"
#   PYTHON        default .venv/bin/python when present, else python3
#
# A file already present and loadable is skipped (with every teacher present, nothing is
# downloaded). Each file is written as <file>.part and renamed into place only after it loads,
# with the project's own loader, strictly into model_dict[arch](num_classes=100); a file that
# does not load is deleted. No checksums were ever published for these files. An archive is
# deleted once its teachers are unpacked. An unreachable host stops the script at once with
# one message. Exit status 0 when every teacher is in place, else 1.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
ROOT=$(dirname -- "$SCRIPT_DIR")
DEFAULT_URL=https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar
ORIGINAL_URL=http://shape2prog.csail.mit.edu/repo
URL=${TEACHERS_URL:-${TEACHER_BASE_URL:-$DEFAULT_URL}}
URL=${URL%/}
SAVE_DIR=${SAVE_DIR:-$ROOT/save/models}
ALL_TEACHERS="wrn_40_2 resnet56 resnet110 resnet32x4 vgg13 ResNet50"
TEACHERS=${TEACHERS:-$ALL_TEACHERS}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
CONNECT_TIMEOUT=10

say() { echo "fetch_pretrained_teachers.sh: $*"; }
warn() { echo "fetch_pretrained_teachers.sh: error: $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

case $URL in
    *.tar | *.tar.gz | *.tgz) LAYOUT=archive ;;
    *) LAYOUT=files ;;
esac

ERRORS=$(mktemp)
trap 'rm -f "$ERRORS"' EXIT

# download URL FILE: exit status 0, 2 (the host cannot be reached) or 1 (any other failure: missing
# file, HTTP error); the tool's own one-line reason is left in $ERRORS. No retries, no noise.
download() {
    : >"$ERRORS"
    if have curl; then
        if [ -t 2 ]; then progress=--progress-bar; else progress=--silent; fi
        status=0
        curl --fail --location --show-error $progress --connect-timeout "$CONNECT_TIMEOUT" \
            --speed-limit 1024 --speed-time 60 -o "$2" "$1" 2>"$ERRORS" || status=$?
        case $status in
            0) return 0 ;;
            5 | 6 | 7 | 28 | 35 | 52 | 56) return 2 ;;  # proxy/host unresolved, refused, timed out, TLS, dropped
            *) return 1 ;;
        esac
    elif have wget; then
        status=0
        wget --quiet --tries=1 --timeout="$CONNECT_TIMEOUT" -O "$2" "$1" 2>"$ERRORS" || status=$?
        case $status in
            0) return 0 ;;
            4 | 5) echo "wget: network failure (exit status $status)" >"$ERRORS"; return 2 ;;
            *) echo "wget: exit status $status" >>"$ERRORS"; return 1 ;;
        esac
    fi
    warn "neither curl nor wget is installed: install one, or put each teacher at" \
        "$SAVE_DIR/<arch>_vanilla/ckpt_epoch_240.pth yourself (this script then verifies it)."
    exit 1
}

unreachable() {  # the one message for a host that cannot be reached; exits
    reason=$(grep . "$ERRORS" | head -n 1 || true)
    stopped="so the script stopped${fetched:+ after fetching$fetched}"
    warn "cannot reach the host of $URL (${reason:-no reason given}), $stopped. Without network, put each teacher at" \
        "$SAVE_DIR/<arch>_vanilla/ckpt_epoch_240.pth yourself (this script then verifies it), or set" \
        "TEACHERS_URL to a reachable copy: an archive (.tar) with <arch>_vanilla/ckpt_epoch_240.pth inside, or" \
        "a folder URL with that layout (RepDistiller's original host, $ORIGINAL_URL, has been offline since 2022)."
    exit 1
}

dest_of() { echo "$SAVE_DIR/${1}_vanilla/ckpt_epoch_240.pth"; }

# verify SUFFIX ARCH...: load each <dest>SUFFIX into its ARCH in one Python process; prints the valid
# ARCHs (the reason for each invalid one goes to stderr)
verify() {
    suffix=$1
    shift
    [ "$#" -gt 0 ] || return 0
    for arch in "$@"; do
        set -- "$@" "$(dest_of "$arch")$suffix" "$arch"
        shift
    done
    "$PYTHON" "$SCRIPT_DIR/verify_checkpoint.py" --status "$@" | sed -n 's/ valid$//p' || true
}

listed() { case " $(echo $2) " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

mkdir -p "$SAVE_DIR" || { warn "cannot create SAVE_DIR=$SAVE_DIR"; exit 1; }
needed=""
existing=""
for arch in $TEACHERS; do
    case " $ALL_TEACHERS " in
        *" $arch "*) ;;
        *) say "note: '$arch' is not one of the published teachers ($ALL_TEACHERS); trying anyway." ;;
    esac
    if [ -f "$(dest_of "$arch")" ]; then existing="$existing $arch"; else needed="$needed $arch"; fi
done
# shellcheck disable=SC2086
good=$(verify "" $existing)
present=""
for arch in $existing; do
    if listed "$arch" "$good"; then
        say "skip $arch: already present and valid ($(dest_of "$arch"))"
        present="$present $arch"
    else
        say "$(dest_of "$arch") is not a valid $arch checkpoint (see above); fetching it again."
        rm -f "$(dest_of "$arch")"
        needed="$needed $arch"
    fi
done

failed=""
downloaded=""
fetched=""
stopped=""
if [ -n "$needed" ] && [ "$LAYOUT" = archive ]; then
    archive=$SAVE_DIR/.$(basename -- "$URL")
    say "downloading $URL"
    status=0
    download "$URL" "$archive.part" || status=$?
    [ "$status" -ne 2 ] || { rm -f "$archive.part"; unreachable; }
    if [ "$status" -ne 0 ]; then
        rm -f "$archive.part"
        warn "downloading $URL failed ($(grep . "$ERRORS" | head -n 1 || true)). Check TEACHERS_URL, or put the" \
            "teachers at $SAVE_DIR/<arch>_vanilla/ckpt_epoch_240.pth yourself."
        exit 1
    fi
    # shellcheck disable=SC2086
    missing=$("$PYTHON" "$SCRIPT_DIR/unpack_teachers.py" "$archive.part" "$SAVE_DIR" $needed) ||
        { rm -f "$archive.part"; warn "the download from $URL is not a readable archive (see above)."; exit 1; }
    rm -f "$archive.part"
    for arch in $needed; do
        if listed "$arch" "$missing"; then
            warn "$arch: $URL holds no ${arch}_vanilla/ckpt_epoch_240.pth."
            failed="$failed $arch"
        else
            downloaded="$downloaded $arch"
        fi
    done
elif [ -n "$needed" ]; then
    for arch in $needed; do
        url=$URL/${arch}_vanilla/ckpt_epoch_240.pth
        mkdir -p "$(dirname -- "$(dest_of "$arch")")"
        say "downloading $arch from $url"
        status=0
        download "$url" "$(dest_of "$arch").part" || status=$?
        if [ "$status" -eq 0 ]; then
            downloaded="$downloaded $arch"
            continue
        fi
        rm -f "$(dest_of "$arch").part"
        rmdir "$(dirname -- "$(dest_of "$arch")")" 2>/dev/null || true
        if [ "$status" -eq 2 ]; then
            stopped=yes
            break
        fi
        warn "$arch: downloading $url failed ($(grep . "$ERRORS" | head -n 1 || true))."
        failed="$failed $arch"
    done
fi

# shellcheck disable=SC2086
good=$(verify .part $downloaded)
for arch in $downloaded; do
    dest=$(dest_of "$arch")
    if listed "$arch" "$good"; then
        mv -f "$dest.part" "$dest"
        say "ok $arch: $dest"
        fetched="$fetched $arch"
    else
        rm -f "$dest.part"
        rmdir "$(dirname -- "$dest")" 2>/dev/null || true
        source=$URL
        [ "$LAYOUT" = archive ] || source=$URL/${arch}_vanilla/ckpt_epoch_240.pth
        warn "$arch: the file from $source is not a valid $arch checkpoint (see above), so it was deleted." \
            "Run the script again, or set TEACHERS_URL to another copy."
        failed="$failed $arch"
    fi
done
[ -z "$stopped" ] || unreachable

say "summary: fetched:${fetched:- none}; already present:${present:- none}; failed:${failed:- none}"
if [ -n "$failed" ]; then
    warn "some teachers could not be fetched:$failed"
    exit 1
fi
say "all teachers are in $SAVE_DIR"
