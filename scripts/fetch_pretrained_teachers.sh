#!/bin/sh
# Fetch the published CIFAR-100 teachers of RepDistiller (CRD paper) into
#   <SAVE_DIR>/<arch>_vanilla/ckpt_epoch_240.pth
# for arch in: wrn_40_2 resnet56 resnet110 resnet32x4 vgg13 ResNet50.
#
# Usage, from the repository root:   sh scripts/fetch_pretrained_teachers.sh
#                                    sh scripts/fetch_pretrained_teachers.sh --print-digests
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
# A file already present is skipped when it is the published file: its checksum is the one in
# helper/published_teachers.py, or this script fetched it (it is listed in
# <SAVE_DIR>/published_teachers.json). A file present that loads but that nothing confirms is left
# in place with a note (the reproduction table calls it "teacher unknown"); one that contradicts
# the published checksum is left in place and reported as failed (it may be a teacher of your own).
# Each download is written as <file>.part and renamed into place only after it loads, with the
# project's own loader, strictly into model_dict[arch](num_classes=100), and agrees with the
# published checksum where helper/published_teachers.py has one; a file that does not is deleted.
# Each file put in place is added, with its weights digest, SHA-256 and source, to
# <SAVE_DIR>/published_teachers.json: the record the results summary trusts. An archive is deleted
# once its teachers are unpacked. An unreachable host stops the script at once with one message.
# --print-digests prints, for each teacher present, a JSON line with its SHA-256 and weights
# digest (to fill helper/published_teachers.py on a machine with the real files), and exits.
# Exit status 0 when every teacher is in place, else 1.
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
RECORD=$SAVE_DIR/published_teachers.json

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
        "$SAVE_DIR/<arch>_vanilla/ckpt_epoch_240.pth yourself (this script then checks it; without a" \
        "published checksum for it, it stays unverified)."
    exit 1
}

unreachable() {  # the one message for a host that cannot be reached; exits
    reason=$(grep . "$ERRORS" | head -n 1 || true)
    stopped="so the script stopped${fetched:+ after fetching$fetched}"
    warn "cannot reach the host of $URL (${reason:-no reason given}), $stopped. Without network, put each teacher at" \
        "$SAVE_DIR/<arch>_vanilla/ckpt_epoch_240.pth yourself (this script then checks it; without a" \
        "published checksum for it, it stays unverified), or set" \
        "TEACHERS_URL to a reachable copy: an archive (.tar) with <arch>_vanilla/ckpt_epoch_240.pth inside, or" \
        "a folder URL with that layout (RepDistiller's original host, $ORIGINAL_URL, has been offline since 2022)."
    exit 1
}

dest_of() { echo "$SAVE_DIR/${1}_vanilla/ckpt_epoch_240.pth"; }

# check SUFFIX SOURCE ARCH...: load each <dest>SUFFIX into its ARCH in one Python process and check it
# against the published teachers; prints 'ARCH STATUS' per file (published, unverified, other, invalid;
# the reason for each of the last two goes to stderr). With a SOURCE, each file that loads and agrees
# with the published checksums is added to $RECORD as fetched from SOURCE (and reported 'published').
check() {
    suffix=$1
    source=$2
    shift 2
    [ "$#" -gt 0 ] || return 0
    for arch in "$@"; do
        set -- "$@" "$(dest_of "$arch")$suffix" "$arch"
        shift
    done
    if [ -n "$source" ]; then
        "$PYTHON" "$SCRIPT_DIR/verify_checkpoint.py" --status --published "$RECORD" --fetched-from "$source" \
            "$@" || true
    else
        "$PYTHON" "$SCRIPT_DIR/verify_checkpoint.py" --status --published "$RECORD" "$@" || true
    fi
}

status_of() { echo "$2" | sed -n "s/^$1 //p"; }  # status_of ARCH "$(check ...)"

listed() { case " $(echo $2) " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if [ "${1:-}" = --print-digests ]; then
    set --
    for arch in $TEACHERS; do
        [ ! -f "$(dest_of "$arch")" ] || set -- "$@" "$(dest_of "$arch")" "$arch"
    done
    [ "$#" -gt 0 ] || { warn "no teacher is present in $SAVE_DIR"; exit 1; }
    exec "$PYTHON" "$SCRIPT_DIR/verify_checkpoint.py" --digests "$@"
elif [ "$#" -gt 0 ]; then
    warn "unknown argument '$1': the only one is --print-digests (the rest is read from the environment)"
    exit 2
fi

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
checked=$(check "" "" $existing)
present=""
unverified=""
failed=""
for arch in $existing; do
    dest=$(dest_of "$arch")
    case $(status_of "$arch" "$checked") in
        published)
            say "skip $arch: already present, the published file ($dest)"
            present="$present $arch" ;;
        unverified)
            say "skip $arch: $dest is present and loads, but it is not confirmed as the published file (no" \
                "published checksum confirms it and this script did not fetch it), so the results summary calls" \
                "it 'teacher unknown'. Delete it and run this script again to fetch it."
            present="$present $arch"
            unverified="$unverified $arch" ;;
        other)
            warn "$arch: $dest is not the published file (see above). It was left in place, as it may be a" \
                "teacher of your own: move it elsewhere and run this script again to fetch the published one."
            failed="$failed $arch" ;;
        *)
            say "$dest is not a valid $arch checkpoint (see above); fetching it again."
            rm -f "$dest"
            needed="$needed $arch" ;;
    esac
done

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
checked=$(check .part "$URL" $downloaded)
for arch in $downloaded; do
    dest=$(dest_of "$arch")
    status=$(status_of "$arch" "$checked")
    if [ "$status" = published ]; then
        mv -f "$dest.part" "$dest"
        say "ok $arch: $dest"
        fetched="$fetched $arch"
        continue
    fi
    rm -f "$dest.part"
    rmdir "$(dirname -- "$dest")" 2>/dev/null || true
    source=$URL
    [ "$LAYOUT" = archive ] || source=$URL/${arch}_vanilla/ckpt_epoch_240.pth
    if [ "$status" = other ]; then
        warn "$arch: the file from $source is not the published $arch teacher (see above), so it was deleted." \
            "Set TEACHERS_URL to another copy."
    else
        warn "$arch: the file from $source is not a valid $arch checkpoint (see above), so it was deleted." \
            "Run the script again, or set TEACHERS_URL to another copy."
    fi
    failed="$failed $arch"
done
[ -z "$stopped" ] || unreachable

say "summary: fetched:${fetched:- none}; already present:${present:- none}; failed:${failed:- none}"
[ -z "$unverified" ] || say "note: present but not confirmed as the published files:$unverified"
if [ -n "$failed" ]; then
    warn "some teachers could not be fetched:$failed"
    exit 1
fi
say "all teachers are in $SAVE_DIR"
