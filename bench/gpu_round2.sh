#!/usr/bin/env bash
# Speed rounds 2 and 3 on one GPU, in one call: every step writes its JSON under $OUT as it goes,
# and a step that fails or runs out of time does not stop the others.
#
#   bash bench/gpu_round2.sh full    # the final measurement: ~480 s on an H200 (limits: 515 s)
#   bash bench/gpu_round2.sh smoke   # the same steps, smaller: ~300 s
#   bash bench/gpu_round2.sh cpu     # crash check without a GPU (tiny models)
#   bash bench/gpu_round2.sh round3  # ESM-2 only: the fused engine's GPU tests, the kernel
#                                    # kernels (SWEEP=1: and the launch sweep), levers --rows
#                                    # round3, bf16 fidelity (510 s; 610 with the sweep)
#
# Steps (each capped by `timeout`; the benches run as `python3 -m bench.NAME`):
#   kernels   bench/kernels_check.py: each Triton kernel vs its reference at ESM-2 3B / DNABERT-S
#             sizes, times vs ceilings (copy bandwidth, bf16 and fp8 matmul rates)
#   levers    bench/esm2_levers.py --rows: the job's defaults, then every lever side by side
#             (compiled, fused LN/residual, GELU epilogue, Triton attention, fp8), predicted vs
#             measured
#   fidelity  bench/esm2_fidelity_gpu.py --runs: 500 proteins vs the fp32 reference (bf16 and fp8
#             gates) and fp8 vs bf16 verdicts of a fixed seeded classifier
#   dnabert   bench/dnabert_throughput.py: DNABERT-S per backend, first pass vs later passes
#   job       bench/embed_e2e.py --models dnabert: the DNABERT-S embed job (virnuc_core.jobs.embed_job)
#             per backend, its steady rate, and the bare model's first vs second pass
#
# Wheels: fair-esm (not on the GPU machines) is installed from $WHEELS (default: .whl here or
# ../../.whl, i.e. the repository root when this tree was carried as .devcarry/wt).
set -u -o pipefail
MODE=${1:-full}
OUT=${OUT:-bench/results/round2}
mkdir -p "$OUT"
LOG="$OUT/round2.log"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)

WHEELS=${WHEELS:-}
for d in .whl ../../.whl; do
  if [ -z "$WHEELS" ] && ls "$d"/*.whl >/dev/null 2>&1; then WHEELS=$d; fi
done
if [ -n "$WHEELS" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  python3 -c "import esm; print('fair-esm', esm.__version__)"; } 2>&1 | tee "$LOG"

step() {  # step NAME SECONDS COMMAND...: run it under timeout, log it, never abort the script
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s, at $(($(date +%s) - START))s): $*" | tee -a "$LOG"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"  # KILL 10 s after TERM: jobs catch TERM
  echo "=== $name exit ${PIPESTATUS[0]} at $(($(date +%s) - START))s" | tee -a "$LOG"
}

if [ "$MODE" = cpu ]; then  # a crash check of this script on a machine without a GPU
  step kernels 300 python3 -m bench.kernels_check --quick --out "$OUT/kernels_check.json"
  step levers 600 python3 -m bench.esm2_levers --model-size 8M --quick --n 100 \
    --rows job fused-triton fp8-ffn --baselines --out "$OUT/esm2_levers_round2.json"
  step fidelity 300 python3 -m bench.esm2_fidelity_gpu --model-size 8M --quick --agreement-n 40 \
    --runs bf16:fused:varlen fp8-ffn:fused:triton bf16:fused:triton \
    --out "$OUT/esm2_fidelity_round2.json"
  step dnabert 300 python3 -m bench.dnabert_throughput --quick --backends padded-auto triton \
    --out "$OUT/dnabert_round2.json"
  step job 300 python3 -m bench.embed_e2e --models dnabert --dnabert tiny --reads 100 \
    --backends padded-auto triton --workers 1 2 --out "$OUT/embed_e2e_dnabert_round2.json"
elif [ "$MODE" = smoke ]; then
  ROWS="job compiled fused fused-epilogue fused-triton fp8 fp8-triton"
  step kernels 55 python3 -m bench.kernels_check --out "$OUT/kernels_check.json"
  step levers 100 python3 -m bench.esm2_levers --rows $ROWS --baselines --seconds 3 \
    --n 6000 --deadline 85 --out "$OUT/esm2_levers_round2.json"
  step fidelity 60 python3 -m bench.esm2_fidelity_gpu --n 200 --agreement-n 2000 \
    --runs bf16:compiled:varlen bf16:fused:triton fp8:fused:varlen fp8:fused:triton \
    --out "$OUT/esm2_fidelity_round2.json"
  step dnabert 45 python3 -m bench.dnabert_throughput --orig-frames 50 --tokenizer-bases 300000 \
    --backends padded-auto padded triton --compile-backends --out "$OUT/dnabert_round2.json"
  step job 55 python3 -m bench.embed_e2e --models dnabert --dnabert full --reads 4000 \
    --backends padded-auto triton --out "$OUT/embed_e2e_dnabert_round2.json"
  step gpu-tests 25 python3 -m pytest -q -m gpu tests/test_fused.py -p no:cacheprovider
elif [ "$MODE" = round3 ]; then  # rotary in attention, residual in the matmuls
  step gpu-tests 90 python3 -m pytest -q -m gpu tests/test_fused.py -p no:cacheprovider
  step kernels 70 python3 -m bench.kernels_check --out "$OUT/kernels_check.json"
  [ -n "${SWEEP:-}" ] && step sweep 100 python3 -m bench.fused_sweep --out "$OUT/fused_sweep.json"
  step levers 240 python3 -m bench.esm2_levers --rows round3 --baselines none --seconds 6 \
    --deadline 220 --out "$OUT/esm2_levers_round3.json"
  step fidelity 110 python3 -m bench.esm2_fidelity_gpu --n 500 \
    --runs bf16:fused:triton bf16:fused-lt:triton --out "$OUT/esm2_fidelity_round3.json"
else  # full: ~480 s on an H200; the step limits add up to 515 s
  step kernels 55 python3 -m bench.kernels_check --out "$OUT/kernels_check.json"
  step levers 200 python3 -m bench.esm2_levers --rows round2 --baselines --seconds 5 \
    --deadline 175 --out "$OUT/esm2_levers_round2.json"
  step fidelity 115 python3 -m bench.esm2_fidelity_gpu --n 500 --agreement-n 6000 \
    --runs bf16:compiled:varlen bf16:fused:varlen fp8:fused:triton fp8-ffn:fused:triton \
    bf16:fused:triton --out "$OUT/esm2_fidelity_round2.json"
  step dnabert 65 python3 -m bench.dnabert_throughput --orig-frames 100 \
    --tokenizer-bases 500000 --backends padded-auto padded triton --compile-backends triton \
    --out "$OUT/dnabert_round2.json"
  step job 80 python3 -m bench.embed_e2e --models dnabert --dnabert full --reads 8000 \
    --backends padded-auto triton --workers 4 8 --out "$OUT/embed_e2e_dnabert_round2.json"
fi
echo "=== done in $(($(date +%s) - START))s" | tee -a "$LOG"
ls -la "$OUT" | tee -a "$LOG"
