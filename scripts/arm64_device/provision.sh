#!/usr/bin/env bash
# Provision an emulated ARM64 "phone": an arm64 Debian sysroot with python3.11 plus the aarch64
# wheels of TVM's runtime, run later under qemu-aarch64-static by start.sh.
#
#   scripts/arm64_device/provision.sh [CACHE_DIR]      (default ~/.cache/lut_tvm/arm64)
#
# Steps (each skipped when its stamp file exists, so a rerun takes a second):
#   1. host tools: qemu-user-static, g++-aarch64-linux-gnu (cross linker), binutils (objdump),
#      mmdebstrap -- apt-get installs the missing ones when run as root;
#   2. sysroot: mmdebstrap --variant=extract --architectures=arm64 bookworm python3.11 +
#      libstdc++6, from the Debian mirror in apt's own sources;
#   3. site: the host pip installs aarch64 manylinux wheels (apache-tvm, apache-tvm-ffi
#      pinned as in pyproject.toml, numpy, psutil, cloudpickle, tornado) into a --target dir,
#      then drops libtvm_compiler.so (the device only needs the runtime).
#
# Exit status 3 means "cannot provision on this machine" (no apt / not root / no disk / no
# network); its last stderr line says why. Environment: PYTHON (host python with pip),
# LUT_TVM_ARM64_SUITE (default bookworm), LUT_TVM_ARM64_MIRROR (default: from apt).
set -euo pipefail

CACHE_DIR="${1:-${LUT_TVM_ARM64_CACHE:-$HOME/.cache/lut_tvm/arm64}}"
PYTHON="${PYTHON:-python3}"
SUITE="${LUT_TVM_ARM64_SUITE:-bookworm}"
TVM_PIN="apache-tvm==0.27.0.post1"
TVM_FFI_PIN="apache-tvm-ffi==0.1.14.post1"
SYSROOT="$CACHE_DIR/sysroot"
SITE="$CACHE_DIR/site"
MIN_FREE_MB=2500

say() { echo "[arm64-device] $*" >&2; }
cannot() { say "cannot provision the emulated ARM64 device: $*"; exit 3; }

mkdir -p "$CACHE_DIR" || cannot "cannot create $CACHE_DIR"
exec 9>"$CACHE_DIR/.provision.lock"
flock 9  # one provisioner at a time (parallel test runs, make + pytest)

need_tools=()
command -v qemu-aarch64-static >/dev/null || need_tools+=(qemu-user-static)
command -v aarch64-linux-gnu-g++ >/dev/null || need_tools+=(g++-aarch64-linux-gnu)
command -v aarch64-linux-gnu-objdump >/dev/null || need_tools+=(binutils-aarch64-linux-gnu)
command -v mmdebstrap >/dev/null || need_tools+=(mmdebstrap)
if [ ${#need_tools[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || cannot "missing ${need_tools[*]} and there is no apt-get"
    [ "$(id -u)" = 0 ] || cannot "missing ${need_tools[*]}; install them (apt-get needs root)"
    say "apt-get install ${need_tools[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 || cannot "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${need_tools[@]}" >&2 \
        || cannot "apt-get install ${need_tools[*]} failed"
fi

if [ ! -f "$SYSROOT/.done" ] || [ ! -f "$SITE/.done" ]; then
    free_mb=$(df -Pm "$CACHE_DIR" | awk 'NR==2 {print $4}')
    [ "${free_mb:-0}" -ge "$MIN_FREE_MB" ] || cannot "only ${free_mb} MB free under $CACHE_DIR (need $MIN_FREE_MB)"
fi

if [ ! -f "$SYSROOT/.done" ]; then
    [ "$(id -u)" = 0 ] || cannot "mmdebstrap --mode=root needs root to build $SYSROOT"
    mirror="${LUT_TVM_ARM64_MIRROR:-}"
    if [ -z "$mirror" ]; then
        # The Debian mirror apt itself uses (first non-security, non-updates repository).
        mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null \
            | awk -v s="$SUITE" '$2 == s {print $1; exit}')
    fi
    [ -n "$mirror" ] || cannot "no Debian $SUITE mirror in apt's sources (set LUT_TVM_ARM64_MIRROR)"
    say "mmdebstrap arm64 $SUITE sysroot from $mirror"
    rm -rf "$SYSROOT.tmp"
    mmdebstrap --mode=root --variant=extract --architectures=arm64 --quiet \
        --include=python3.11,libstdc++6 "$SUITE" "$SYSROOT.tmp" "$mirror" >&2 \
        || { rm -rf "$SYSROOT.tmp"; cannot "mmdebstrap failed (network or mirror?)"; }
    [ -x "$SYSROOT.tmp/usr/bin/python3.11" ] || cannot "the sysroot has no usr/bin/python3.11"
    rm -rf "$SYSROOT"
    mv "$SYSROOT.tmp" "$SYSROOT"
    touch "$SYSROOT/.done"
fi

if [ ! -f "$SITE/.done" ]; then
    say "pip install aarch64 wheels into $SITE"
    rm -rf "$SITE.tmp"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-compile \
        --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
        --python-version 3.11 --implementation cp --target "$SITE.tmp" \
        "$TVM_PIN" "$TVM_FFI_PIN" numpy psutil cloudpickle tornado >&2 \
        || { rm -rf "$SITE.tmp"; cannot "pip could not fetch the aarch64 wheels (network or index?)"; }
    # The device runs code, it does not compile: the 250 MB compiler library only slows import.
    find "$SITE.tmp" -name 'libtvm_compiler.so' -delete
    rm -rf "$SITE"
    mv "$SITE.tmp" "$SITE"
    touch "$SITE/.done"
fi

say "ready: sysroot $SYSROOT, site $SITE"
echo "$CACHE_DIR"
