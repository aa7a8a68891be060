# Embed every shard with each model (one job per model and shard), then merge back to index order.


rule embed_shard:
    input:
        unpack(embed_input),
    output:
        "results/{sample}/embeddings/{model}/shard_{i}.h5",
    params:
        step=step("embed_shard"),
        settings=lambda wc: SETTINGS.embed(wc.model).to_json(),
        # Resume state lives outside the declared outputs: Snakemake never deletes it.
        work="results/{sample}/work/{model}/shard_{i}",
        # one thread runs the GPU loop, the others read and tokenize
        workers=lambda wc, threads: max(0, threads - 1),
    threads: SETTINGS.reader_workers + 1
    resources:
        gpu=1,
        # Halved on every retry, so a CUDA out-of-memory failure is retried with a smaller batch.
        token_budget=lambda wc, attempt: SETTINGS.embed(wc.model, attempt).token_budget,
    retries: config.get("embed_retries", 2)
    log:
        "logs/{sample}/embed_shard/{model}_{i}.log",
    benchmark:
        "benchmarks/{sample}/embed_shard/{model}_{i}.tsv"
    conda:
        ENV
    shell:
        "{params.step} --settings {params.settings:q}"
        " --token-budget {resources.token_budget}"
        " --sequences {input.sequences} --index {input.index} --shard {input.shard}"
        " --work {params.work} --output {output} --workers {params.workers} 2> {log}"


rule merge_shards:
    input:
        shards=expand("results/{{sample}}/embeddings/{{model}}/shard_{i}.h5", i=SHARDS),
        index="results/{sample}/frames.index.tsv",
    output:
        "results/{sample}/embeddings/{model}.h5",
    params:
        step=step("merge_shards"),
    log:
        "logs/{sample}/merge_shards/{model}.log",
    conda:
        ENV
    shell:
        "{params.step} --index {input.index} --output {output}"
        " {input.shards} 2> {log}"


rule features:
    input:
        dnabert="results/{sample}/embeddings/dnabert.h5",
        esm="results/{sample}/embeddings/esm.h5",
    output:
        "results/{sample}/features.h5",
    params:
        step=step("merge_shards"),
    log:
        "logs/{sample}/features.log",
    conda:
        ENV
    shell:
        "{params.step} --features --dnabert {input.dnabert}"
        " --esm {input.esm} --output {output} 2> {log}"
