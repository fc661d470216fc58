#!/usr/bin/env bash
# One GPU measuring session for a lent H100/H200 (docs/tutorials/profile-gpu.md, "Measuring on a lent GPU").
#
#   device tool:  run  command="bash benchmarks/gpu_session.sh"  timeout_s=600
#                 (add carry=[".whl"] only if wheels were downloaded into .whl/, see below)
#
# Time-boxed to ~8.5 minutes of command time (HWLAT_GPU_SESSION_S, default 500 s), inside one call's
# 10-minute limit; the machine's start comes on top (1-2 minutes of the session's 15).
#   ~30 s  checks: nvidia-smi, the GPU test file (tests/test_gpu.py), three CLI runs (a quick torch CUDA
#          sweep, onnxruntime --provider cuda, a GPU index that is not there)
#   ~440 s benchmarks/gpu_session.py: NB201 900..1899 + the 10 HELP reference archs at batch 1/32/256,
#          the default op sweep in fp32 then fp16, and second runs of subsets for repeatability;
#          each phase stops at its deadline and keeps every row it measured
#   ~5 s   packing: everything into $OUT/gpu_tables.tar.gz (the tool brings back at most 8 files,
#          2 folders deep), plus $OUT/session.log
# Then, here:  python benchmarks/gpu_report.py /work/.device/.../gpu_tables.tar.gz
# Dry run of the same steps on a machine without a GPU (a few tiny phases on the CPU):
#   OUT=/tmp/out HWLAT_GPU_DEVICE=cpu PYTHON=.venv/bin/python bash benchmarks/gpu_session.sh
#
# Packages: the device image has torch (CUDA), onnx, onnxruntime (the CPU build), numpy, pandas,
# pyyaml, scipy, scikit-learn, tqdm and pytest. If one is missing, wheels in .whl/ (carried) are
# installed into /tmp/site first (/work/.library/device/README.md says how to download them).
# onnxruntime-gpu cannot be carried (its wheel is ~200 MB, over the 64 MiB a call may carry), so the
# CUDA execution provider is checked (one clear message) but not measured in this session.
set -u -o pipefail

START=$(date +%s)
SESSION_S=${HWLAT_GPU_SESSION_S:-500}
OUT=${OUT:-/tmp/hwlat_gpu_out}
WORK=$(mktemp -d /tmp/hwlat_gpu.XXXXXX)
mkdir -p "$OUT" "$WORK/tables" "$WORK/checks"
LOG="$OUT/session.log"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
DEVICE=${HWLAT_GPU_DEVICE:-cuda}
DRIVER_ARGS=(--device "$DEVICE")
[ "$DEVICE" = cpu ] && DRIVER_ARGS+=(--batches 1,2 --scale "${HWLAT_GPU_SCALE:-0.08}")

elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[$(elapsed)s] $*" | tee -a "$LOG"; }
pack() {
    cp "$LOG" "$WORK/session.log" 2>/dev/null
    tar -czf "$OUT/gpu_tables.tar.gz" -C "$WORK" tables checks session.log 2>>"$LOG"
    say "packed $(du -h "$OUT/gpu_tables.tar.gz" | cut -f1) into \$OUT/gpu_tables.tar.gz"
}
trap pack EXIT

say "hwlat GPU session in $PWD, budget ${SESSION_S}s, output $OUT"

# ---- packages ------------------------------------------------------------------------------------
if ! $PY -c "import torch, onnx, onnxruntime, numpy, pandas, yaml, scipy, sklearn, tqdm" 2>>"$LOG"; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        say "installing the carried wheels into /tmp/site"
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            2>&1 | tee -a "$LOG" || { say "wheel install failed"; exit 1; }
        export PYTHONPATH="/tmp/site:$PYTHONPATH"
    else
        say "a package hwlat needs is missing and no .whl/ was carried (see the log above)"; exit 1
    fi
fi
$PY -m pip list 2>/dev/null | grep -iE "^(torch|onnx|onnxruntime|numpy|pandas|nvidia-cudnn|nvidia-cublas|triton) " \
    > "$WORK/checks/packages.txt"

# ---- the GPU and its driver ----------------------------------------------------------------------
if command -v nvidia-smi >/dev/null; then
    nvidia-smi | tee "$WORK/checks/nvidia-smi.txt" | head -15 | tee -a "$LOG"
    nvidia-smi -q > "$WORK/checks/nvidia-smi-q.txt" 2>&1
else
    say "nvidia-smi not found"
fi
if [ "$DEVICE" != cpu ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    say "torch sees no GPU; stopping before any measurement"
    $PY -m hwlat profile ops --runtime torch --device cuda --sweep quick --out "$WORK/tables/none" 2>&1 | tee -a "$LOG"
    exit 1
fi

# ---- checks: the GPU tests, and the CLI on the GPU (real runs, bad input included) ---------------
say "tests/test_gpu.py on the GPU"
timeout 120 $PY -m pytest tests/test_gpu.py -q -rs -p no:cacheprovider 2>&1 | tail -25 | tee "$WORK/checks/pytest_gpu.txt" | tee -a "$LOG"
say "CLI: torch CUDA quick sweep"
timeout 60 $PY -m hwlat profile ops --runtime torch --device cuda --sweep quick --protocol quick --no-progress \
    --out "$WORK/tables/cli/quick_torch_cuda" 2>&1 | tail -8 | tee -a "$LOG"
say "CLI: onnxruntime --provider cuda (the image's onnxruntime is expected to be the CPU build)"
timeout 60 $PY -m hwlat profile ops --runtime onnxruntime --provider cuda --sweep quick --protocol quick --no-progress \
    --out "$WORK/tables/cli/quick_ort_cuda" 2>&1 | tail -4 | tee -a "$LOG"
say "CLI: a GPU index that is not there"
timeout 60 $PY -m hwlat profile ops --runtime torch --device cuda:7 --sweep quick --out "$WORK/tables/cli/none" 2>&1 \
    | tail -2 | tee -a "$LOG"

# ---- the measurements ----------------------------------------------------------------------------
LEFT=$(( SESSION_S - $(elapsed) - 15 ))
if [ "$LEFT" -lt 60 ]; then say "only ${LEFT}s left: no measuring"; exit 1; fi
say "measuring for up to ${LEFT}s"
timeout --signal=INT $(( LEFT + 30 )) $PY benchmarks/gpu_session.py --out "$WORK/tables" --budget "$LEFT" \
    "${DRIVER_ARGS[@]}" 2>&1 \
    | tee -a "$LOG"
say "done after $(elapsed)s"
