# Embed every shard with each model (one GPU job per model and shard), finish each shard's file,
# then map them all, in record order, into features.h5.


rule embed_shard:
    input:
        unpack(embed_input),
    output:
        # The job's rows; temporary: finalize_shard turns them into the shard's HDF5 file.
        rows=temp(directory("results/{sample}/embeddings/{model}/shard_{i}.rows")),
        # fp32 reference rows of the validation sample's records in this shard, made from the
        # weights the job loads anyway (validate_embeddings then need not load the model)
        reference="results/{sample}/embeddings/{model}/shard_{i}.reference.h5",
    params:
        # Every setting but the token budget, which is the resource below (one channel).
        settings=lambda wc: SETTINGS.embed(wc.model).rule_params(),
        # Resume state lives outside the declared outputs: Snakemake never deletes it.
        work="results/{sample}/work/{model}/shard_{i}",
    # one thread runs the GPU loop, the others read and tokenize
    threads: SETTINGS.reader_workers + 1
    # ESM-2's jobs first: its loop is the run's critical path (virnuc_core.registry)
    priority: lambda wc: FAMILIES[wc.model].embed_priority
    resources:
        mem_mb=mem("embed_shard"),
        # Locally, a model that shares a GPU (config share_gpu) is not counted here: its job,
        # given gpu=0, takes a shared slot on one of the run's first `--resources gpu` GPUs
        # (0: any visible one). A cluster job asks for a GPU of its own (it would get none).
        # Not a param: changing it reruns nothing.
        gpu=lambda wc: 0 if SETTINGS.share_gpu[wc.model] and workflow.local_exec else 1,
        shared_gpus=lambda wc: run_gpus(),
        # The job's token budget (its only channel): halved on every retry, so a CUDA
        # out-of-memory failure is retried with a smaller batch. Not a param either: a budget
        # changes batch composition only (float rounding), and changing it reruns nothing.
        token_budget=lambda wc, attempt: SETTINGS.embed(wc.model, attempt).token_budget,
    retries: SETTINGS.embed_retries
    log:
        "logs/{sample}/embed_shard/{model}_{i}.log",
    benchmark:
        "benchmarks/{sample}/embed_shard/{model}_{i}.tsv"
    conda:
        ENV
    script:
        "../../scripts/embed_shard.py"


rule finalize_shard:
    input:
        rows="results/{sample}/embeddings/{model}/shard_{i}.rows",
        sources="results/{sample}/shards/{model}.sources.npy",
        plan="results/{sample}/shards/plan.json",
        # Copies take their first occurrence's row, which lies in this shard or an earlier one.
        # ancient: an earlier shard's file made again later must not make this one (whose rows
        # are temporary, gone once used) be embedded again.
        earlier=lambda wc: [ancient(f) for f in earlier_shards(wc)],
    output:
        "results/{sample}/embeddings/{model}/shard_{i}.h5",
    log:
        "logs/{sample}/finalize_shard/{model}_{i}.log",
    benchmark:
        "benchmarks/{sample}/finalize_shard/{model}_{i}.tsv"
    resources:
        mem_mb=mem("finalize_shard"),
    conda:
        ENV
    script:
        "../../scripts/finalize_shard.py"


rule merge_shards:
    input:
        unpack(lambda wc: {m: shard_files(wc.sample, m) for m in MODELS}),
        index="results/{sample}/frames.index.npy",
        frames="results/{sample}/frames.fa",
    output:
        "results/{sample}/features.h5",
    params:
        models=MODELS,
    log:
        "logs/{sample}/merge_shards.log",
    benchmark:
        "benchmarks/{sample}/merge_shards.tsv"
    resources:
        mem_mb=mem("merge_shards"),
    conda:
        ENV
    script:
        "../../scripts/merge_shards.py"
