#!/usr/bin/env bash
# Wheels the benchmarks need beyond torch, timm and accelerate, for a bare GPU machine with Python 3.12
# (docs/benchmarks.md, "Step throughput"). Run here, from the repository root; it fills .whl/ (git-ignored
# through .git/info/exclude). There: pip install --no-index --no-deps --target /tmp/site .whl/*.whl and
# export PYTHONPATH=/tmp/site:$PWD.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl \
    omegaconf==2.3.0 webdataset braceexpand simplejpeg torchao==0.18.0 "$@"
# omegaconf needs antlr4 4.9.x, published as a source archive only: build its (pure-Python) wheel here.
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls .whl
