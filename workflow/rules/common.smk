# Samples, shard numbers and the Python that runs the step scripts.
import csv
import dataclasses
import json
import os
import re
import shlex
from pathlib import Path

# Under --sdm conda the env's python runs the scripts; otherwise the one running Snakemake.
# The repository goes first on PYTHONPATH so the scripts find virnuc_core without an install.
_conda = any(m.name == "CONDA" for m in workflow.deployment_settings.deployment_method)
_pythonpath = os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")]))
PYTHON = f"PYTHONPATH={shlex.quote(_pythonpath)} {'python' if _conda else shlex.quote(sys.executable)}"
ENV = "../../envs/virnuc.yaml"
SCRIPTS = Path(workflow.basedir) / "scripts"
MODELS = ["dnabert", "esm"]
SHARDS = list(range(config["shards"]))
sys.path.insert(0, workflow.basedir)
from virnuc_core.settings import WorkflowSettings  # noqa: E402

SETTINGS = WorkflowSettings.from_config(config)


def read_samples(samples):
    """Samples: a mapping name -> FASTA path, or the path of a TSV sheet (sample, fasta)."""
    if isinstance(samples, dict):
        table = dict(samples)
    else:
        with open(samples, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        for row in rows:
            validate(row, "../schemas/samples.schema.yaml")
        table = {row["sample"]: row["fasta"] for row in rows}
    if not table:
        raise ValueError("config 'samples' lists no samples")
    return table

# The classifier file (or "tiny" for the demo) as a script argument; predictions need one.
CLASSIFIER_ARG = f"--classifier {shlex.quote(config['classifier'])}" if config.get("classifier") else ""


SAMPLES = read_samples(config["samples"])


wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES)),
    model="dnabert|esm",
    i=r"\d+",


def sample_fasta(wildcards):
    return SAMPLES[wildcards.sample]


def all_outputs(wildcards):
    """Every output of every sample; predictions and what is made of them need a classifier."""
    outs = []
    for s in SAMPLES:
        outs += [f"results/{s}/features.h5", f"results/{s}/validation/summary.json"]
        if not config.get("classifier"):
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
        if config["viral_fasta"]:
            outs.append(f"results/{s}/viral.fa")
    return outs


if not config.get("classifier"):
    logger.warning(
        "config 'classifier' is not set: the run stops after embeddings and validation. "
        "Set it to the original tool's 300_model.pth or 500_model.pth to get predictions."
    )


def step(name):
    """The command that runs step script ``scripts/<name>.py`` (a rule's params.step)."""
    return f"{PYTHON} {SCRIPTS / name}.py"


def embed_input(wildcards):
    seqs = "proteins.faa" if wildcards.model == "esm" else "frames.fa"
    return {
        "sequences": f"results/{wildcards.sample}/{seqs}",
        "index": f"results/{wildcards.sample}/frames.index.tsv",
        "shard": f"results/{wildcards.sample}/shards/shard_{wildcards.i}.txt",
    }
