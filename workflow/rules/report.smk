# What the user reads: per-read summary, viral reads, run summary page, score and throughput
# figures. Outputs marked report(...) make up `snakemake --report report.html`.


# summary.tsv and the run summary page; viral.fa only when the config asks for it.
SUMMARY_OUTPUTS = {
    "summary": "results/{sample}/summary.tsv",
    "html": report(
        "results/{sample}/report/run_summary.html",
        caption="../report/run_summary.rst",
        category="Run summary",
        labels={"sample": "{sample}", "table": "counts and top reads"},
    ),
} | ({"viral": "results/{sample}/viral.fa"} if config["viral_fasta"] else {})
# The files of each embed job, as embed_shard declares them (report_figures reads them).
EMBED_PATTERNS = {
    "h5": rules.embed_shard.output[0],
    "log": rules.embed_shard.log[0],
    "benchmark": rules.embed_shard.benchmark,
}


rule summarize_sample:
    input:
        fasta=sample_fasta,
        counts="results/{sample}/frames.counts.json",
        features="results/{sample}/features.h5",
        predictions="results/{sample}/prediction_results.tsv",
        highest="results/{sample}/prediction_results_highestscore.tsv",
    output:
        **SUMMARY_OUTPUTS,
    params:
        step=step("summarize"),
        chunk_length=config["chunk_length"],
        classifier=config.get("classifier") or "none",
        viral=lambda wc, output: f"--viral-fasta {output.viral}" if "viral" in output.keys() else "",
    log:
        "logs/{sample}/summarize_sample.log",
    conda:
        ENV
    shell:
        "{params.step} --sample {wildcards.sample} --fasta {input.fasta:q}"
        " --chunk-length {params.chunk_length} --classifier {params.classifier:q}"
        " --counts {input.counts} --features {input.features} --predictions {input.predictions}"
        " --highest {input.highest} --summary {output.summary} --html {output.html}"
        " {params.viral} 2> {log}"


rule report_figures:
    input:
        predictions="results/{sample}/prediction_results.tsv",
        summary="results/{sample}/summary.tsv",
        # Only the shard files: logs and benchmarks are read if present (NA if not), so that
        # deleting logs/ never makes Snakemake embed everything again.
        shards=expand(EMBED_PATTERNS["h5"], model=MODELS, i=SHARDS, allow_missing=True),
    output:
        scores=report(
            "results/{sample}/report/scores.png",
            caption="../report/scores.rst",
            category="Predictions",
            labels={"sample": "{sample}", "figure": "virus score distribution"},
        ),
        throughput_png=report(
            "results/{sample}/report/throughput.png",
            caption="../report/throughput.rst",
            category="Throughput",
            labels={"sample": "{sample}", "view": "plot"},
        ),
        throughput_html=report(
            "results/{sample}/report/throughput.html",
            caption="../report/throughput.rst",
            category="Throughput",
            labels={"sample": "{sample}", "view": "table"},
        ),
        throughput_tsv="results/{sample}/report/throughput.tsv",
    params:
        step=step("report_figures"),
        # A function, so that Snakemake leaves the patterns' {wildcards} alone.
        patterns=lambda wc: json.dumps({k: str(v) for k, v in EMBED_PATTERNS.items()}),
        models=MODELS,
        shards=len(SHARDS),
    log:
        "logs/{sample}/report_figures.log",
    conda:
        ENV
    shell:
        "{params.step} --sample {wildcards.sample}"
        " --predictions {input.predictions} --summary {input.summary} --patterns {params.patterns:q}"
        " --models {params.models} --shards {params.shards}"
        " --scores-png {output.scores} --throughput-png {output.throughput_png}"
        " --throughput-tsv {output.throughput_tsv} --throughput-html {output.throughput_html}"
        " 2> {log}"
