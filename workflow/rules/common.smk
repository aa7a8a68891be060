# Samples, shard numbers and the settings every rule reads (virnuc_core.settings).
import os
import re
import sys

# The step scripts import virnuc_core from the repository (jobs inherit this environment).
sys.path.insert(0, workflow.basedir)
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")])
)
from virnuc_core.samples import missing_files, read_samples  # noqa: E402
from virnuc_core.settings import WorkflowSettings  # noqa: E402

SETTINGS = WorkflowSettings.from_config(config)
ENV = "../../envs/virnuc.yaml"
MODELS = ["dnabert", "esm"]
SHARDS = list(range(SETTINGS.shards))
SAMPLES = read_samples(config["samples"])
for _sample, _path in missing_files(SAMPLES):
    raise WorkflowError(f"sample {_sample!r}: input file {_path} does not exist")
# What each model reads (DNABERT-S the frames' nucleotides, ESM-2 their proteins).
SEQUENCES = {"dnabert": "frames.fa", "esm": "proteins.faa"}


wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES)),
    model="dnabert|esm",
    i=r"\d+",


def sample_reads(wildcards):
    return SAMPLES[wildcards.sample]


def shard_files(sample, model):
    return [f"results/{sample}/embeddings/{model}/shard_{i}.h5" for i in SHARDS]


def all_outputs(wildcards):
    """Every output of every sample; predictions and what is made of them need a classifier."""
    outs = []
    for s in SAMPLES:
        outs += [f"results/{s}/features.h5", f"results/{s}/validation/summary.json"]
        if not SETTINGS.classifier:
            continue
        outs += [
            f"results/{s}/prediction_results.tsv",
            f"results/{s}/prediction_results_highestscore.tsv",
            f"results/{s}/summary.tsv",
            f"results/{s}/report/run_summary.html",
            f"results/{s}/report/scores.png",
            f"results/{s}/report/throughput.png",
            f"results/{s}/report/throughput.html",
        ]
        if SETTINGS.viral_fasta:
            outs.append(f"results/{s}/viral.fa")
    return outs


# The classifier is an input of the rules that use it (a changed file reruns them); "tiny" is
# the demo's seeded random one, built in code.
CLASSIFIER_INPUT = (
    {"classifier": SETTINGS.classifier}
    if SETTINGS.classifier not in (None, "tiny")
    else {}
)
if SETTINGS.classifier is None:
    logger.warning(
        "config 'classifier' is not set: the run stops after embeddings and validation. "
        "Set it to the original tool's 300_model.pth or 500_model.pth to get predictions."
    )
elif SETTINGS.classifier != "tiny" and not os.path.isfile(SETTINGS.classifier):
    raise WorkflowError(
        f"config 'classifier': {SETTINGS.classifier} does not exist (give the path of the "
        "original tool's 300_model.pth or 500_model.pth, matching chunk_length)"
    )
