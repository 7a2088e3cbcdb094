#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md in one device call (one H100/H200; each measurement is capped so
# the whole script ends within ~9 minutes, under the device's 600 s per call, most important first).
# Here first: bash tools/bench/gpu_wheels.sh (wheels for what the GPU image lacks, into .whl/). Then on the GPU
# machine, from the repository root, with .whl/ carried along with the tree (it is git-ignored: the device
# call needs carry [".whl"]): bash tools/bench/gpu_session.sh
# The image must have python3 3.12 (the wheels' tag), torch, torchvision, timm, accelerate, matplotlib.
# Each measurement writes its table and JSON line to $OUT/<name>.txt (or ./bench_out without $OUT); what a
# killed measurement wrote so far is kept.
set -uo pipefail
out=${OUT:-bench_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt"
bench="python3 tools/bench/step_throughput.py --preset seed --workers 12"
timeout 200 $bench > "$out/seed.txt" 2>&1                                          # (a), (b), (c) + phases
timeout 80 $bench --no-pipeline --no-phases distill.teacher_compile=true > "$out/compile.txt" 2>&1
timeout 60 $bench --no-pipeline --no-phases distill.teacher_fp8=true > "$out/fp8.txt" 2>&1
timeout 60 $bench --no-phases dataset.decode_on_device=true dataset.train_dataset.drop_near_constant=false \
    > "$out/decode_on_device.txt" 2>&1                                               # nvJPEG in the step
timeout 45 $bench --no-pipeline --no-phases dataset.device_prefetch=false > "$out/no_prefetch.txt" 2>&1
timeout 50 python3 tools/bench/data_throughput.py --images-small 480 --images-large 160 --repeats 1 \
    --decode-on-device cuda > "$out/data_throughput.txt" 2>&1
timeout 30 python3 tools/bench/view_mix.py --images 16 --sam sam_vit_h --batch 8 > "$out/view_mix.txt" 2>&1
tail -n 1 "$out"/seed.txt "$out"/compile.txt "$out"/fp8.txt "$out"/decode_on_device.txt "$out"/no_prefetch.txt
