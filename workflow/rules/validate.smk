# Recompute a sample of frames with the slow reference (v1) path and compare with the fast one.
# The embed jobs compute the sample's reference rows (virnuc_core.jobs.references); the validation
# job compares, and loads the model only for rows they did not make.


rule validation_sample:
    input:
        index="results/{sample}/frames.index.npy",
    output:
        "results/{sample}/validation/sample.npy",
    params:
        validate=SETTINGS.validate_dict(),
    resources:
        mem_mb=mem("validation_sample"),
    log:
        "logs/{sample}/validation_sample.log",
    benchmark:
        "benchmarks/{sample}/validation_sample.tsv"
    conda:
        ENV
    script:
        "../../scripts/validation_sample.py"


rule validate_embeddings:
    input:
        unpack(lambda wc: MODELS_VERIFIED),
        shards=lambda wc: shard_files(wc.sample, wc.model),
        references=lambda wc: shard_references(wc.sample, wc.model),
        sample="results/{sample}/validation/sample.npy",
        sequences=lambda wc: f"results/{wc.sample}/{SEQUENCES[wc.model]}",
        index="results/{sample}/frames.index.npy",
        frames="results/{sample}/frames.fa",
    output:
        table="results/{sample}/validation/{model}.tsv",
        reference="results/{sample}/validation/{model}.reference.h5",
        summary="results/{sample}/validation/{model}.json",
        histogram=report(
            "results/{sample}/validation/{model}.png",
            caption="../report/validation.rst",
            category="Validation",
            labels={"sample": "{sample}", "model": "{model}"},
        ),
    params:
        settings=lambda wc: SETTINGS.embed(wc.model).as_dict(),
        validate=SETTINGS.validate_dict(),
    resources:
        # No GPU slot counted: the rows come from the embed jobs. Rows they did not make are
        # computed here on a GPU claimed through its lock (locally), else on the CPU.
        mem_mb=mem("validate_embeddings"),
    log:
        "logs/{sample}/validate_embeddings/{model}.log",
    benchmark:
        "benchmarks/{sample}/validate_embeddings/{model}.tsv"
    conda:
        ENV
    script:
        "../../scripts/validate_embeddings.py"


rule validation_summary:
    input:
        unpack(lambda wc: CLASSIFIER_INPUT),
        summaries=expand("results/{{sample}}/validation/{model}.json", model=MODELS),
        references=expand("results/{{sample}}/validation/{model}.reference.h5", model=MODELS),
        features="results/{sample}/features.h5",
    output:
        "results/{sample}/validation/summary.json",
    params:
        classifier=SETTINGS.classifier,
        classifier_sha256=CLASSIFIER_SHA256,
    resources:
        mem_mb=mem("validation_summary"),
    log:
        "logs/{sample}/validation_summary.log",
    benchmark:
        "benchmarks/{sample}/validation_summary.tsv"
    conda:
        ENV
    script:
        "../../scripts/validation_summary.py"
