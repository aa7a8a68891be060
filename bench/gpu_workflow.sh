#!/usr/bin/env bash
# The whole workflow on one GPU (bench/workflow_gpu.py), in one call: every step writes its
# JSON under $OUT as it goes, and a step that fails or runs out of time does not stop the others.
#
#   OUT=/tmp/out bash bench/gpu_workflow.sh 100000                # every step, 314 s on an H200
#   OUT=/tmp/out bash bench/gpu_workflow.sh 200000 pyc workflow   # only those: 394 s
#
# Steps (each capped by `timeout`):
#   pyc        compile the installed Python packages' bytecode once, as pip does when it
#              installs: the GPU machines' PyTorch has none (torch/__pycache__ empty) and the
#              processes there wrote none, so every job's Python compiled the modules it
#              imported again (4.9 s of compile() in one ESM-2 load, 1,422 modules:
#              bench/results/archive/2026-12-04-workflow-shared-h200/load_profile_shared_h200.json). PYTHONPYCACHEPREFIX points every
#              process of the run at the compiled files.
#   tests      the tests marked gpu in tests/test_fused.py (the fused ESM-2 engine against
#              fair-esm's forward) and tests/test_reference_task.py (reference rows beside
#              the loop, on their own CUDA stream)
#   workflow   python3 -m bench.workflow_gpu --reads N --kill-at 0: the real workflow,
#              uninterrupted, then the bare model on 6,000 of its proteins
#   load       python3 -m bench.load_profile: the ESM-2 job's steps before its loop, profiled,
#              on the run's own model file and proteins
# Wheels: fair-esm, snakemake and the rest (not on the GPU machines) are installed from .whl.
set -u -o pipefail
READS=${1:-100000}
shift || true
STEPS=" ${*:-pyc tests workflow load} "
OUT=${OUT:-bench/results/workflow}
WORK=${WORK:-/tmp/wf}
mkdir -p "$OUT"
LOG="$OUT/gpu_workflow.log"
export PYTHONUNBUFFERED=1
START=$(date +%s)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PATH="/tmp/site/bin:$PATH"
{ nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$LOG"

step() {  # step NAME SECONDS COMMAND...: run it under timeout, log it, never abort the script
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s, at $(($(date +%s) - START))s): $*" | tee -a "$LOG"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  echo "=== $name exit ${PIPESTATUS[0]} at $(($(date +%s) - START))s" | tee -a "$LOG"
}

SITE=$(python3 -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")
{ echo "torch's folder $SITE: $(ls "$SITE/torch/__pycache__" 2>/dev/null | wc -l) compiled" \
    "files in torch/__pycache__; $( [ -w "$SITE/torch" ] && echo writable || echo read-only)"; } |
  tee -a "$LOG"
if [[ $STEPS == *" pyc "* ]]; then
  export PYTHONPYCACHEPREFIX=/tmp/pyc
  step pyc 150 python3 -m compileall -q -j 16 -x "/tests?/" "$SITE" /tmp/site "$PWD/virnuc_core"
fi
if [[ $STEPS == *" tests "* ]]; then
  step gpu-tests 120 python3 -m pytest -q -m gpu tests/test_fused.py tests/test_reference_task.py \
    -p no:cacheprovider
fi
if [[ $STEPS == *" workflow "* ]]; then
  step workflow 420 python3 -m bench.workflow_gpu --reads "$READS" --kill-at 0 --bare 6000 \
    --work "$WORK" --out "$OUT/workflow_gpu.json"
  mkdir -p "$OUT/logs"
  cp "$WORK"/logs/gpu/embed_shard/*.log "$WORK/run2.log" "$OUT/logs/" 2>/dev/null
fi
if [[ $STEPS == *" load "* ]]; then
  step load 70 python3 -m bench.load_profile --config "$WORK/config.yaml" \
    --proteins "$WORK/results/gpu/proteins.faa" --out "$OUT/load_profile.json"
fi
echo "done at $(($(date +%s) - START))s" | tee -a "$LOG"
