#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md in one device call (meant for one H100/H200, ~10 minutes).
# Here first: bash tools/bench/gpu_wheels.sh (wheels for what the GPU image lacks, into .whl/). Then on the GPU
# machine, from the repository root, with .whl/ copied along with the tree: bash tools/bench/gpu_session.sh
# Each measurement writes its table and JSON line to $OUT/<name>.txt (or ./bench_out without $OUT).
set -uo pipefail
out=${OUT:-bench_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt"
bench="python3 tools/bench/step_throughput.py --preset seed --workers 12"
$bench > "$out/seed.txt" 2>&1                                                      # (a), (b), (c) + phases
$bench --no-pipeline --no-phases distill.teacher_compile=true > "$out/compile.txt" 2>&1
$bench --no-pipeline --no-phases distill.teacher_fp8=true > "$out/fp8.txt" 2>&1
$bench --no-pipeline --no-phases dataset.device_prefetch=false > "$out/no_prefetch.txt" 2>&1
$bench --no-phases dataset.decode_on_device=true dataset.train_dataset.drop_near_constant=false \
    > "$out/decode_on_device.txt" 2>&1                                               # nvJPEG in the step
python3 tools/bench/data_throughput.py --decode-on-device cuda > "$out/data_throughput.txt" 2>&1
python3 tools/bench/view_mix.py --images 64 --sam sam_vit_h --batch 8 > "$out/view_mix.txt" 2>&1
tail -n 1 "$out"/seed.txt "$out"/compile.txt "$out"/fp8.txt "$out"/no_prefetch.txt "$out"/decode_on_device.txt
