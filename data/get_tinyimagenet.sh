#!/bin/sh
# Download Tiny ImageNet-200 and sort it into one folder per class:
#   <DATA_DIR>/tiny-imagenet-200/train/<wnid>/*.JPEG   (the zip has train/<wnid>/images/*.JPEG)
#   <DATA_DIR>/tiny-imagenet-200/val/<wnid>/*.JPEG     (the zip has val/images/ + val_annotations.txt)
#
# Usage, from anywhere:   sh data/get_tinyimagenet.sh
# Environment:
#   DATA_DIR             where tiny-imagenet-200/ goes (default: the folder of this script, data/)
#   TINYIMAGENET_URL     default http://cs231n.stanford.edu/tiny-imagenet-200.zip
#   TINYIMAGENET_SHA256  optional: expected sha256 of the zip
#
# Idempotent: the sorted tree appears in one rename, with a marker file inside; a later run prints
# "already prepared" and does nothing. An interrupted download resumes (curl -C - / wget -c); a
# corrupt zip is deleted and the script fails without leaving a tree behind.
set -eu

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
DATA_DIR=${DATA_DIR:-$SCRIPT_DIR}
URL=${TINYIMAGENET_URL:-http://cs231n.stanford.edu/tiny-imagenet-200.zip}
SHA256=${TINYIMAGENET_SHA256:-}
PYTHON=${PYTHON:-python3}
NAME=tiny-imagenet-200

say() { echo "get_tinyimagenet.sh: $*"; }
die() { echo "get_tinyimagenet.sh: error: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

mkdir -p "$DATA_DIR" || die "cannot create DATA_DIR=$DATA_DIR"
DATA_DIR=$(CDPATH='' cd -- "$DATA_DIR" && pwd -P)
TARGET=$DATA_DIR/$NAME
MARKER=$TARGET/.prepared
ZIP=$DATA_DIR/$NAME.zip
PART=$ZIP.part
STAGING=$DATA_DIR/.$NAME.staging

if [ -f "$MARKER" ]; then
    say "already prepared: $TARGET"
    exit 0
fi
if [ -e "$TARGET" ]; then
    die "$TARGET exists but was not prepared by this script (no $MARKER). Move it away or delete it" \
        "(rm -rf '$TARGET') and run the script again."
fi

# --- download -----------------------------------------------------------------------------------
fetch() {  # URL -> $PART, resuming a partial file where the server allows it; no retries, no progress noise
    if have curl; then
        if [ -t 2 ]; then progress=--progress-bar; else progress=--silent; fi
        curl --fail --location --show-error $progress --connect-timeout 10 -C - -o "$PART" "$URL" && return 0
        status=$?
        [ "$status" -eq 33 ] || return "$status"  # 33: the server cannot resume, so start over
        rm -f "$PART"
        curl --fail --location --show-error $progress --connect-timeout 10 -o "$PART" "$URL"
    elif have wget; then
        if [ -t 2 ]; then quiet=""; else quiet=--quiet; fi
        wget $quiet -c --tries=1 --timeout=10 -O "$PART" "$URL"
    else
        die "neither curl nor wget is installed; download $URL to $ZIP yourself and run the script again."
    fi
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

verify() {  # the zip is complete (every member's CRC) and, if given, has the expected sha256
    if [ -n "$SHA256" ]; then
        actual=$(sha256_of "$ZIP")
        if [ "$actual" != "$SHA256" ]; then
            echo "sha256 of $ZIP is $actual, expected $SHA256" >&2
            return 1
        fi
    fi
    if have unzip; then
        unzip -tq "$ZIP" >/dev/null
    else
        "$PYTHON" -c 'import sys, zipfile; sys.exit(zipfile.ZipFile(sys.argv[1]).testzip() is not None)' "$ZIP"
    fi
}

if [ ! -f "$ZIP" ]; then
    say "downloading $URL"
    if ! fetch; then
        [ -s "$PART" ] || rm -f "$PART"
        kept=""
        [ ! -f "$PART" ] || kept=" The partial download is kept as $PART; the next run resumes it."
        die "downloading $URL failed (see above).$kept Check the network, or set TINYIMAGENET_URL to a mirror."
    fi
    mv -f "$PART" "$ZIP"
fi
say "verifying $ZIP"
if ! verify; then
    rm -f "$ZIP"
    die "$ZIP is truncated or corrupt, so it was deleted; run the script again to download it afresh" \
        "(or put a good copy at $ZIP)."
fi

# --- unzip into a staging folder, sort there, then rename into place --------------------------
rm -rf "$STAGING"
trap 'rm -rf "$STAGING"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$STAGING"
say "unzipping into $STAGING"
if have unzip; then
    unzip -q "$ZIP" -d "$STAGING"
else
    "$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$ZIP" "$STAGING"
fi
SOURCE=$STAGING/$NAME
[ -d "$SOURCE/train" ] && [ -d "$SOURCE/val/images" ] && [ -f "$SOURCE/val/val_annotations.txt" ] ||
    die "$ZIP does not hold $NAME/train, $NAME/val/images and $NAME/val/val_annotations.txt."

say "sorting train/"
classes=0
for class_dir in "$SOURCE"/train/*/; do
    [ -d "$class_dir" ] || continue
    classes=$((classes + 1))
    [ -d "${class_dir}images" ] || continue
    set -- "${class_dir}images"/*
    [ -e "$1" ] && mv -- "$@" "$class_dir"
    rmdir "${class_dir}images" || die "could not empty ${class_dir}images"
done
[ "$classes" -gt 0 ] || die "$ZIP has no class folders under $NAME/train."
if [ -f "$SOURCE/wnids.txt" ]; then
    expected=$(grep -c . "$SOURCE/wnids.txt")
    [ "$classes" -eq "$expected" ] || die "$ZIP has $classes class folders in train/ but wnids.txt lists $expected."
fi

say "sorting val/"
ANNOTATIONS=$SOURCE/val/val_annotations.txt
for wnid in $(cut -f2 "$ANNOTATIONS" | tr -d '\r' | sort -u); do
    mkdir -p "$SOURCE/val/$wnid"
    awk -F'\t' -v wnid="$wnid" '$2 == wnid { print $1 }' "$ANNOTATIONS" |
        (cd "$SOURCE/val/images" && xargs sh -c 'mv -- "$@" "$0"' "../$wnid")
done
rmdir "$SOURCE/val/images" 2>/dev/null ||
    die "$NAME/val/images holds images that val_annotations.txt does not list; the zip is not the expected one."

date >"$SOURCE/.prepared"
mv "$SOURCE" "$TARGET"
say "done: $TARGET ($classes classes). The zip $ZIP is no longer needed and can be deleted."
