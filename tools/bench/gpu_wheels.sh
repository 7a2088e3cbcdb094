#!/usr/bin/env bash
# Wheels the benchmarks need on a GPU machine whose image has Python 3.12 (x86-64) with torch, timm,
# accelerate, numpy, pillow, safetensors, matplotlib, tensorboard, tqdm and rich but not the packages below,
# as the project's H100/H200 image (docs/benchmarks.md, "Step throughput"). For another Python, change
# --python-version. Run here, from the repository root; it fills .whl/ (git-ignored), which must travel to the
# GPU machine with the working tree. There: tools/bench/gpu_session.sh installs them into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl \
    omegaconf==2.3.0 webdataset braceexpand simplejpeg torchao==0.18.0 "$@"
# omegaconf needs antlr4 4.9.x, published as a source archive only: build its (pure-Python) wheel here.
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls .whl
