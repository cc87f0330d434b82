#!/usr/bin/env bash
# Packs the release CUDA binaries for scripts/gpu-check.sh: stripped and xz-compressed into
# .gpu/ (git-ignored), small enough to carry to a lent GPU machine.
set -eu
SRC=${CARGO_TARGET_DIR:-target/cuda}/release
mkdir -p .gpu
for b in lavin-infer lavin-train lavin-tools; do
    strip -o ".gpu/$b" "$SRC/$b"
    xz -T0 -6 -f ".gpu/$b"
done
rm -rf .gpu/bin
ls -l .gpu
