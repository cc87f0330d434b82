#!/usr/bin/env bash
# GPU checks for a lent CUDA machine (no Rust toolchain there): CUDA parity on the bundled
# fixture, then 7B-shape training (paper settings, and LaVIN-lite) and inference benchmarks.
#
# Build here first (see docs/gpu.md):
#   CUDARC_CUDA_VERSION=13000 CARGO_TARGET_DIR=target/cuda cargo build --release \
#     -p lavin-infer -p lavin-train -p lavin-tools \
#     --features lavin-infer/cuda,lavin-train/cuda,lavin-tools/cuda
#   scripts/gpu-pack.sh            # stripped, xz-compressed binaries in .gpu/
# Then run `bash scripts/gpu-check.sh` on the device with `.gpu` carried. Locally,
# `BACKEND=flex PRESET=tiny bash scripts/gpu-check.sh` rehearses the same steps on the CPU.
#
# Each step has its own time limit, so one hang does not take the rest; every log, the GPU
# memory samples and a summary table land in $OUT.
#
# STEPS picks the steps (names below). The default set fits one 600 s device call with room
# for the start; the A/B steps go in a second call:
#   STEPS="train-7b-composed train-7b-ckpt" bash scripts/gpu-check.sh
# STEPS=all runs every step (about 860 s of limits).
set -u
OUT=${OUT:-/tmp/lavin-gpu-check}
BACKEND=${BACKEND:-cuda}
PRESET=${PRESET:-7b-shape}
BIN=${BIN:-.gpu/bin}
STEPS=${STEPS:-parity train-7b infer-7b train-7b-lite}
mkdir -p "$OUT" "$BIN"

# Unpack the carried binaries (xz keeps them under the device tool's 64 MiB travel limit).
for f in .gpu/*.xz; do
    [ -e "$f" ] || continue
    b=$BIN/$(basename "$f" .xz)
    [ -x "$b" ] || { xz -dc "$f" >"$b" && chmod +x "$b"; }
done
[ -x "$BIN/lavin-infer" ] || BIN=target/release

if [ "$BACKEND" = cuda ]; then
    # cudarc loads libcuda/libnvrtc at run time: add the toolkit's and pip's copies to the path.
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 \
        $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null); do
        [ -d "$d" ] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
    done
    export LD_LIBRARY_PATH
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
    head -15 "$OUT/nvidia-smi.txt"
    ldd "$BIN/lavin-infer" | grep -i "not found"
fi

printf '%-28s %5s %7s %10s\n' step rc seconds peak_MiB >"$OUT/summary.txt"

# step NAME LIMIT_S CMD...: runs CMD under `timeout`, sampling GPU memory every 100 ms.
step() {
    local name=$1 limit=$2
    shift 2
    [ "$STEPS" = all ] || [[ " $STEPS " == *" $name "* ]] || return 0
    echo "=== $name: $*"
    local sampler=
    if [ "$BACKEND" = cuda ]; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$OUT/$name.mem" 2>/dev/null &
        sampler=$!
    fi
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
    local peak=-
    [ -s "$OUT/$name.mem" ] && peak=$(sort -n "$OUT/$name.mem" | tail -1)
    tail -4 "$OUT/$name.log"
    printf '%-28s %5s %7s %10s\n' "$name" "$rc" $((SECONDS - t0)) "$peak" >>"$OUT/summary.txt"
}

FIXTURE=${FIXTURE:-tests/data/parity/tiny-a}
step parity 100 "$BIN/lavin-tools" parity "$FIXTURE" --backend "$BACKEND"
# Paper settings: batch 4, 512 tokens, fp16 frozen base, f32 adapters.
step train-7b 150 "$BIN/lavin-train" bench --preset "$PRESET" --backend "$BACKEND" \
    --batch-size 4 --warmup 2 --steps 4
step infer-7b 120 "$BIN/lavin-infer" bench --preset "$PRESET" --backend "$BACKEND" \
    --batch-size 1,8
# LaVIN-lite: 4-bit block linears, blocks recomputed in backward, batch 1 (target <= 9 GB).
step train-7b-lite 90 "$BIN/lavin-train" bench --preset "$PRESET" --backend "$BACKEND" \
    --batch-size 1 --warmup 1 --steps 2 --bits 4bit --gradient-checkpointing
# The same step with Burn's composed ops instead of the lean autodiff ones (kernels/lean_autodiff.rs):
# what they save in memory and time on the GPU.
step train-7b-composed 150 "$BIN/lavin-train" bench --preset "$PRESET" --backend "$BACKEND" \
    --batch-size 4 --warmup 2 --steps 4 --composed-ops
# The paper's batch with recomputation: the memory a 16-bit base needs at batch 4.
step train-7b-ckpt 100 "$BIN/lavin-train" bench --preset "$PRESET" --backend "$BACKEND" \
    --batch-size 4 --warmup 1 --steps 2 --gradient-checkpointing
# Device memory per LLaMA block (CubeCL's pool, `device_memory` in the JSON): 0, 1 and 2 blocks
# at the paper's batch, the GPU's counterpart of the lavapipe slices in docs/performance.md.
SLICE=${SLICE:-$([ "$PRESET" = 7b-shape ] && echo 7b-slice || echo "$PRESET")}
step train-7b-slices 150 bash -c 'for k in 0 1 2; do "$0" bench --preset "$1" --backend "$2" \
    --layers $k --batch-size 4 --warmup 1 --steps 1 || exit; done' "$BIN/lavin-train" "$SLICE" "$BACKEND"

echo "=== summary (peak = nvidia-smi memory.used, MiB)"
cat "$OUT/summary.txt"
grep -h '^[{[]' "$OUT"/*.log
