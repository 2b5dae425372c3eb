#!/usr/bin/env bash
# Issue 6's GPU figures in one run on a lent device machine (BENCHMARKS.md, "On a real GPU").
# The machine has no Rust toolchain but has PyTorch, so the binaries are built here and travel.
#
#   benches/device.sh prepare    here: release builds of resnet-wgpu and the kernels bench, and the
#                                Vulkan loader packages, into the ignored folders .device/ and .gl/
#   benches/device.sh run        there (the device tool's `run`, carry [".device", ".gl"]):
#                                bash benches/device.sh run
#
# `run` writes to $OUT (the device tool's folder; /tmp/device-out elsewhere) 8 files: log.txt
# (everything printed), ours50.json and ours20.json (`bench`: ResNet-50 and ResNet-20 (B) training
# and inference), torch50.json and torch20.json (PyTorch on the same GPU, same configurations:
# benches/pytorch/bench.py), layers.json (the per-layer times of a ResNet-50 training step, each
# pass with its kernels and tile constants; tuning_s in every result),
# kernels.txt (`cargo bench --bench kernels`) and autotune.txt (the autotune's choices).
# RESNET50_BATCH (64), CIFAR_BATCH (128), ITERS (20) and KERNELS_FILTER (the kernels bench's rows)
# size it. Untimed on a GPU so far; on lavapipe with batches 1 and 8 it took 39 s.
set -uo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    set -e
    cargo build --release --bin resnet-wgpu
    kernels=$(cargo bench --bench kernels --no-run 2>&1 | grep -o 'target/release/deps/kernels-[0-9a-f]*' | tail -1)
    mkdir -p .device && cp target/release/resnet-wgpu .device/ && cp "$kernels" .device/kernels
    if ! ls .gl/*.deb >/dev/null 2>&1; then
        mkdir -p .gl /tmp/amd64/partial
        o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
        apt-get "${o[@]}" update -qq
        (cd .gl && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    fi
    du -sh .device .gl
    ;;
run)
    out=${OUT:-/tmp/device-out}
    mkdir -p "$out"
    exec > >(tee "$out/log.txt") 2>&1
    tee_pid=$!
    export PYTHONUNBUFFERED=1
    # (grep -q would end the pipe early: ldconfig's SIGPIPE then fails it under pipefail.)
    if ! ldconfig -p | grep libvulkan.so.1 >/dev/null; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && export VK_DRIVER_FILES=$icd
    export RESNET_WGPU_CACHE=$out/cache
    b50=${RESNET50_BATCH:-64} b20=${CIFAR_BATCH:-128} iters=${ITERS:-20}
    set -x
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv || true
    .device/resnet-wgpu adapters
    # The figures issue 6 asks for first, then the finer ones.
    .device/resnet-wgpu bench --backend vulkan --model resnet50 --batch "$b50" --mode both --iters "$iters" --json "$out/ours50.json"
    python3 benches/pytorch/bench.py --model resnet50 --batch "$b50" --mode both --iters "$iters" --json "$out/torch50.json"
    .device/resnet-wgpu bench --backend vulkan --model resnet20 --shortcut b --batch "$b20" --mode both --iters "$iters" --json "$out/ours20.json"
    python3 benches/pytorch/bench.py --model resnet20 --shortcut b --batch "$b20" --mode both --iters "$iters" --json "$out/torch20.json"
    .device/resnet-wgpu bench --backend vulkan --model resnet50 --batch "$b50" --mode train --per-layer --iters 3 --json "$out/layers.json"
    RESNET_WGPU_BACKEND=vulkan RESNET_WGPU_BENCH_FILTER=${KERNELS_FILTER:-} .device/kernels --bench >"$out/kernels.txt"
    set +x
    # At most 8 files come back, no more than two folders down: the autotune's choices as one file.
    for f in "$out"/cache/autotune/*.json; do [ -f "$f" ] && echo "== $f" && cat "$f"; done >"$out/autotune.txt"
    rm -rf "$out/cache"
    ls -la "$out"
    exec >&- 2>&-
    wait "$tee_pid"
    ;;
*)
    echo "usage: benches/device.sh prepare | run" >&2
    exit 2
    ;;
esac
