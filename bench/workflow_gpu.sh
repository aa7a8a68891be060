#!/usr/bin/env bash
# The real workflow on a GPU machine: random-weight models saved as local checkpoints, generated
# reads, `snakemake --profile profiles/local-2gpu` limited to the GPUs given. Writes the logs,
# benchmark files, validation summary and a timing JSON under $OUT (or ./workflow_gpu_out).
#   bash bench/workflow_gpu.sh [reads=2000] [esm_size=3B] [gpus=1] [shards=2]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
READS=${1:-2000}; ESM=${2:-3B}; GPUS=${3:-1}; SHARDS=${4:-2}
OUT=${OUT:-$PWD/workflow_gpu_out}; mkdir -p "$OUT"
W=${WORK:-/tmp/virnuc-wf}; mkdir -p "$W"
python3 "$REPO/bench/make_reads.py" --n "$READS" --min-len 500 --max-len 500 --kind open \
  --seed 3 --out "$W/reads.fa"
[ -e "$W/models/dnabert_full/config.json" ] ||
  python3 "$REPO/bench/make_models.py" --esm "$ESM" --dnabert full --out "$W/models"
ESM_PT=$(ls "$W"/models/esm2_*.pt | grep -v contact | head -1)
cat >"$W/config.yaml" <<CFG
samples: {gpu: $W/reads.fa}
chunk_length: 500
shards: $SHARDS
models: {dnabert: $W/models/dnabert_full, esm: $ESM_PT}
precision: bf16
token_budget: {dnabert: 65536, esm: 65536}
validate: {n: 200, mean_cosine: 0.999, min_cosine: 0.99, seed: 0}
classifier: tiny
CFG
cd "$W"
start=$(date +%s.%N)
python3 -m snakemake -s "$REPO/Snakefile" --configfile "$W/config.yaml" \
  --profile "$REPO/profiles/local-2gpu" --resources gpu="$GPUS" --cores all 2>&1 | tee "$OUT/snakemake.log" | grep -E "rule |Finished|Error|error" || true
end=$(date +%s.%N)
tar czf "$OUT/logs.tgz" logs benchmarks results/gpu/validation results/gpu/frames.counts.json 2>/dev/null || true
python3 - "$W" "$start" "$end" "$READS" "$ESM" "$GPUS" "$SHARDS" >"$OUT/workflow_gpu.json" <<'PY'
import json, sys, glob, re, torch
w, start, end, reads, esm, gpus, shards = sys.argv[1:]
jobs = {}
for log in sorted(glob.glob(f"{w}/logs/gpu/embed_shard/*.log")):
    text = open(log).read()
    dev = re.findall(r"device (\S+) \((\w+), GPU index (\S+)\)", text)
    prog = re.findall(r"progress: .*?([\d,]+) tokens/s, ([\d,.]+) records/s", text)
    jobs[log.rsplit("/", 1)[1]] = {"device": dev[-1] if dev else None,
                                   "tokens_per_s": prog[-1][0] if prog else None,
                                   "records_per_s": prog[-1][1] if prog else None}
print(json.dumps({"reads": int(reads), "esm": esm, "gpus": int(gpus), "shards": int(shards),
                  "wall_s": float(end) - float(start), "gpu": torch.cuda.get_device_name(0),
                  "torch": torch.__version__, "embed_jobs": jobs,
                  "counts": json.load(open(f"{w}/results/gpu/frames.counts.json")),
                  "validation": json.load(open(f"{w}/results/gpu/validation/summary.json"))},
                 indent=2))
PY
cat "$OUT/workflow_gpu.json"
