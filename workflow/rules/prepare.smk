# Chunk every read, keep the stop-free frames, and plan each model's shards.
rule index_fasta:
    input:
        reads=sample_reads,
    output:
        frames="results/{sample}/frames.fa",
        proteins="results/{sample}/proteins.faa",
        index="results/{sample}/frames.index.npy",
        counts="results/{sample}/frames.counts.json",
    params:
        chunk_length=SETTINGS.chunk_length,
        reads=reads_fingerprints,
        layout=sample_layout,
    log:
        "logs/{sample}/index_fasta.log",
    benchmark:
        "benchmarks/{sample}/index_fasta.tsv"
    resources:
        mem_mb=mem("index_fasta"),
    conda:
        ENV
    script:
        "../../scripts/index_fasta.py"


rule plan_shards:
    input:
        index="results/{sample}/frames.index.npy",
        frames="results/{sample}/frames.fa",
        proteins="results/{sample}/proteins.faa",
    output:
        plan="results/{sample}/shards/plan.json",
        sources=expand("results/{{sample}}/shards/{model}.sources.npy", model=MODELS),
        # what the run will cost, before any GPU job starts (virnuc_core.jobs.run_plan)
        run_plan="results/{sample}/plan.json",
    params:
        models=MODELS,
        sequences=lambda wc: {m: f"results/{wc.sample}/{SEQUENCES[m]}" for m in MODELS},
        specs=dict(SETTINGS.models),
        shards=N_SHARDS,
        dedupe=SETTINGS.dedupe,
    log:
        "logs/{sample}/plan_shards.log",
    benchmark:
        "benchmarks/{sample}/plan_shards.tsv"
    resources:
        mem_mb=mem("plan_shards"),
    conda:
        ENV
    script:
        "../../scripts/plan_shards.py"


rule verify_models:
    input:
        LOCKED,
    output:
        "results/models.verified.json",
    params:
        folder=SETTINGS.models_dir,
    resources:
        mem_mb=mem("verify_models"),
    log:
        "logs/verify_models.log",
    benchmark:
        "benchmarks/verify_models.tsv"
    conda:
        ENV
    script:
        "../../scripts/verify_models.py"
