# Chunk every read, keep the stop-free frames, and split them into length-balanced shards.


rule index_fasta:
    input:
        sample_fasta,
    output:
        frames="results/{sample}/frames.fa",
        proteins="results/{sample}/proteins.faa",
        index="results/{sample}/frames.index.tsv",
        counts="results/{sample}/frames.counts.json",
    params:
        step=step("index_fasta"),
        chunk_length=config["chunk_length"],
    log:
        "logs/{sample}/index_fasta.log",
    conda:
        ENV
    shell:
        "{params.step} --fasta {input} --chunk-length {params.chunk_length}"
        " --frames {output.frames} --proteins {output.proteins} --index {output.index}"
        " --counts {output.counts} 2> {log}"


rule split_strides:
    input:
        index="results/{sample}/frames.index.tsv",
        frames="results/{sample}/frames.fa",
        proteins="results/{sample}/proteins.faa",
    output:
        expand("results/{{sample}}/shards/shard_{i}.txt", i=SHARDS),
    params:
        step=step("split_strides"),
        outdir=lambda wc: f"results/{wc.sample}/shards",
        shards=config["shards"],
        # with dedupe, the shard files also say which record's embedding each record shares
        dedupe=lambda wc, input: (
            f"--frames {input.frames} --proteins {input.proteins}" if SETTINGS.dedupe else ""
        ),
    log:
        "logs/{sample}/split_strides.log",
    conda:
        ENV
    shell:
        "{params.step} --index {input.index} --shards {params.shards}"
        " --outdir {params.outdir} {params.dedupe} 2> {log}"
