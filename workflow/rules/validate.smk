# Recompute a sample of frames with the slow reference (v1) path and compare with the fast one.


rule validate_embeddings:
    input:
        merged="results/{sample}/embeddings/{model}.h5",
        sequences=lambda wc: f"results/{wc.sample}/{'proteins.faa' if wc.model == 'esm' else 'frames.fa'}",
        index="results/{sample}/frames.index.tsv",
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
        step=step("validate_embeddings"),
        settings=lambda wc: SETTINGS.embed(wc.model).to_json(),
        validate=json.dumps(dataclasses.asdict(SETTINGS.validate)),
    resources:
        gpu=1,
    log:
        "logs/{sample}/validate_embeddings/{model}.log",
    conda:
        ENV
    shell:
        "{params.step} --settings {params.settings:q}"
        " --validate {params.validate:q} --merged {input.merged} --sequences {input.sequences}"
        " --index {input.index} --table {output.table} --reference {output.reference}"
        " --summary {output.summary} --histogram {output.histogram} 2> {log}"


rule validation_summary:
    input:
        summaries=expand("results/{{sample}}/validation/{model}.json", model=MODELS),
        references=expand("results/{{sample}}/validation/{model}.reference.h5", model=MODELS),
        features="results/{sample}/features.h5",
    output:
        "results/{sample}/validation/summary.json",
    params:
        step=step("validation_summary"),
        classifier=CLASSIFIER_ARG,
    log:
        "logs/{sample}/validation_summary.log",
    conda:
        ENV
    shell:
        "{params.step} --features {input.features}"
        " --references {input.references} --summaries {input.summaries}"
        " {params.classifier} --output {output} 2> {log}"
