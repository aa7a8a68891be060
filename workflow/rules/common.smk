# Samples, shard numbers and the settings every rule reads (virnuc_core.settings).
import os
import re
import sys

# This file's own imports (this checkout's library); the step scripts import the installed one.
sys.path.insert(0, workflow.basedir)
import warnings  # noqa: E402

from virnuc_core.engine.models.classifier_check import check_classifier, check_readable  # noqa: E402
from virnuc_core.util.digests import sampled_fingerprint  # noqa: E402
from virnuc_core.registry import FAMILIES, local_models  # noqa: E402
from virnuc_core.engine.model_files import ModelFilesError, locked_paths, quick_check  # noqa: E402
from virnuc_core.jobs import resources  # noqa: E402
from virnuc_core.report.run_notes import closing_lines, report_command, results_prefix  # noqa: E402
from virnuc_core.report.run_notes import NOTICE_NAME, tiny_settings  # noqa: E402
from virnuc_core.data.samples import (  # noqa: E402
    SampleError,
    check_config_file,
    missing_files,
    read_sample_table,
)
from virnuc_core.settings import ENV_SHARDS, WorkflowSettings  # noqa: E402
from snakemake_interface_executor_plugins.settings import ExecMode  # noqa: E402


def _refuse(problem):
    """Stop before any job runs, saying what is wrong (no traceback)."""
    raise WorkflowError(str(problem))


# Everything a run needs is checked here, before any job starts: models, classifier, samples.
# The config files this run read (--configfile, or config/config.yaml): Snakemake's loader keeps
# only the last of a key given twice, so `gut1: R1.fq.gz` then `gut1: R2.fq.gz` would drop R1.
for _configfile in workflow.configfiles:
    try:
        check_config_file(_configfile)
    except SampleError as err:
        _refuse(err)
CONFIGURED = WorkflowSettings.from_config(config)
try:
    SETTINGS = local_models(CONFIGURED)  # hub names -> the locked models folder
except ModelFilesError as err:
    _refuse(err)
# The models folder's files, when a hub name uses it: each is an input of verify_models.
LOCKED = []
if SETTINGS.models != CONFIGURED.models:
    try:
        quick_check(SETTINGS.models_dir)
    except ModelFilesError as err:
        _refuse(err)
    LOCKED = [str(p) for p in locked_paths(SETTINGS.models_dir)]
with warnings.catch_warnings(record=True) as _caught:
    warnings.simplefilter("always")
    try:
        CLASSIFIER_SHA256 = check_classifier(SETTINGS.classifier, SETTINGS.chunk_length) or ""
        check_readable(SETTINGS.classifier)  # a corrupt or truncated file, before any job
    except ValueError as err:
        _refuse(err)
for _warning in _caught:
    logger.warning(str(_warning.message))
ENV = "../../envs/virnuc.yaml"
# The config keys set to "tiny" (the demo's random models): the results say they mean nothing.
TINY = tiny_settings(SETTINGS.models, SETTINGS.classifier)
MODELS = list(FAMILIES)


def run_gpus():
    """The run's `--resources gpu` (0 when not given): the GPUs a shared embed job may use."""
    gpu = workflow.global_resources.get("gpu")
    value = getattr(gpu, "value", gpu)
    return int(value) if isinstance(value, (int, float)) else 0


# `shards: auto` follows the run's GPUs: one embed job per GPU and model (docs: config README).
# The run's own process decides; the jobs it spawns (a cluster job reads this file again, without
# the run's --resources) take its decision from the environment they inherit (sbatch
# --export=ALL), so every job agrees on the shards.
if workflow.exec_mode == ExecMode.DEFAULT:
    N_SHARDS = SETTINGS.shard_count(run_gpus())
    os.environ[ENV_SHARDS] = str(N_SHARDS)
    if SETTINGS.shards == "auto":
        logger.info(f"shards: auto -> {N_SHARDS} per model (--resources gpu={run_gpus()})")
elif SETTINGS.shards == "auto":
    if not os.environ.get(ENV_SHARDS, "").isdigit():
        _refuse(f"shards: auto: this job did not inherit {ENV_SHARDS} from its run; "
                "set `shards` to a number in the config")
    N_SHARDS = int(os.environ[ENV_SHARDS])
else:
    N_SHARDS = SETTINGS.shards
SHARDS = list(range(N_SHARDS))
try:
    SAMPLES = read_sample_table(config["samples"])  # name -> Sample (files, layout)
except SampleError as err:
    _refuse(err)
_unusable = missing_files({name: list(s.files) for name, s in SAMPLES.items()})  # each file not there or not a regular file, and what it is
if _unusable:
    _refuse("\n".join(_unusable))
# What each model reads (DNABERT-S the frames' nucleotides, ESM-2 their proteins).
SEQUENCES = {m: f.sequences for m, f in FAMILIES.items()}


wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES)),
    model="|".join(FAMILIES),
    i=r"\d+",


def sample_reads(wildcards):
    """The sample's files, in read order (pairs: mate-1 file, mate-2 file, ...)."""
    return list(SAMPLES[wildcards.sample].files)


def sample_layout(wildcards, input):
    """How the sample's files hold its reads: single, pairs or interleaved. A function of the
    input too, so not a params rerun trigger itself (runs made before it existed rerun
    nothing); reads_fingerprints carries a paired sample's layout instead."""
    return SAMPLES[wildcards.sample].layout


def reads_fingerprints(wildcards):
    """The sample's reads files by content (size and sampled sha256), one per file: reads
    replaced by other content but an older mtime (cp -p, rsync -a, tar x) rerun the index and
    everything after it. A function of the wildcards only, as Snakemake's params rerun trigger
    leaves out params of functions that take input, output, threads or resources. A paired
    sample's layout is one more item (none for single-end: runs made before pairs rerun
    nothing)."""
    prints = [sampled_fingerprint(path) for path in sample_reads(wildcards)]
    layout = SAMPLES[wildcards.sample].layout
    # the same files read as pairs give other reads (<pair>/1, <pair>/2): a change reruns
    return prints if layout == "single" else [*prints, f"layout: {layout}"]


def shard_files(sample, model):
    return [f"results/{sample}/embeddings/{model}/shard_{i}.h5" for i in SHARDS]


def shard_references(sample, model):
    """The embed jobs' reference rows of the validation sample, one file per shard."""
    return [f"results/{sample}/embeddings/{model}/shard_{i}.reference.h5" for i in SHARDS]


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
            f"results/{s}/regions.tsv",
            f"results/{s}/report/run_summary.html",
            f"results/{s}/report/scores.png",
            f"results/{s}/report/throughput.png",
            f"results/{s}/report/throughput.html",
        ]
        if SETTINGS.viral_fasta:
            outs.append(f"results/{s}/viral.fa")
        if SAMPLES[s].paired:
            outs.append(f"results/{s}/pairs.tsv")
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
# The GPU jobs wait for the models folder to be verified (full sha256 of every locked file).
MODELS_VERIFIED = {"verified": "results/models.verified.json"} if LOCKED else {}





def mem(rule):
    """A rule's mem_mb, from what bench/scale.py measured (virnuc_core.jobs.resources)."""
    return lambda wc, input: resources.mem_mb(rule, resources.grows_with(rule, input))


def earlier_shards(wildcards):
    """The shard files a shard's copies may take rows from (none without dedupe)."""
    return shard_files(wildcards.sample, wildcards.model)[: int(wildcards.i)] if SETTINGS.dedupe else []


def embed_input(wildcards):
    return MODELS_VERIFIED | {
        "sequences": f"results/{wildcards.sample}/{SEQUENCES[wildcards.model]}",
        "index": f"results/{wildcards.sample}/frames.index.npy",
        "sources": f"results/{wildcards.sample}/shards/{wildcards.model}.sources.npy",
        "plan": f"results/{wildcards.sample}/shards/plan.json",
        # ancient: a sample drawn again (other validate settings) must not make the shards be
        # embedded again; validate_embeddings computes the rows the jobs did not make
        "validation_sample": ancient(f"results/{wildcards.sample}/validation/sample.npy"),
    }


def say_where_results_are():
    """The console's last lines after a successful run (virnuc_core.report.run_notes.closing_lines)."""
    try:
        targets = {str(f) for f in workflow.dag.derived_targetfiles}
    except AttributeError:  # not Snakemake's public API: then every output that is there
        targets = None
    argv = sys.argv[1:]  # this run's command line: the report's needs the same options
    prefix = results_prefix(argv)  # results are relative to --directory, as the user typed it
    command = report_command(argv)
    notes = closing_lines(
        SAMPLES, targets, classifier=SETTINGS.classifier, tiny=TINY, command=command, prefix=prefix
    )
    for line in notes:
        logger.info(line)
