# What the user reads: per-read summary, viral reads, run summary page, score and throughput
# figures. Outputs marked report(...) make up `snakemake --report report.html`.


# summary.tsv, regions.tsv and the run summary page; viral.fa only when the config asks for it;
# beside them, for a run with tiny random models, DEMO_MODELS_README.txt saying the calls mean
# nothing.
SUMMARY_OUTPUTS = {
    "summary": "results/{sample}/summary.tsv",
    "regions": "results/{sample}/regions.tsv",
    "html": report(
        "results/{sample}/report/run_summary.html",
        caption="../report/run_summary.rst",
        category="Run summary",
        labels={"sample": "{sample}", "table": "counts and top reads"},
    ),
} | ({"viral": "results/{sample}/viral.fa"} if SETTINGS.viral_fasta else {})
SUMMARY_OUTPUTS |= {"notice": f"results/{{sample}}/{NOTICE_NAME}"} if TINY else {}


rule summarize_sample:
    input:
        reads=sample_reads,
        counts="results/{sample}/frames.counts.json",
        features="results/{sample}/features.h5",
        predictions="results/{sample}/prediction_results.tsv",
        highest="results/{sample}/prediction_results_highestscore.tsv",
        # the frames the predictions were made from: row i's read and chunk numbers
        index="results/{sample}/frames.index.npy",
    output:
        **SUMMARY_OUTPUTS,
    params:
        chunk_length=SETTINGS.chunk_length,
        classifier=SETTINGS.classifier or "none",
        classifier_sha256=CLASSIFIER_SHA256,
        tiny=TINY,
        # a param: changing it reruns this rule only (not predict, not the embeddings)
        min_score=SETTINGS.min_score,
        layout=sample_layout,
    log:
        "logs/{sample}/summarize_sample.log",
    benchmark:
        "benchmarks/{sample}/summarize_sample.tsv"
    resources:
        mem_mb=mem("summarize_sample"),
    conda:
        ENV
    script:
        "../../scripts/summarize_sample.py"


# One row per pair of a paired sample (mate 1 and mate 2 of summary.tsv taken together).
rule pairs_table:
    input:
        summary="results/{sample}/summary.tsv",
    output:
        pairs="results/{sample}/pairs.tsv",
    log:
        "logs/{sample}/pairs_table.log",
    benchmark:
        "benchmarks/{sample}/pairs_table.tsv"
    resources:
        # streams summary.tsv two rows at a time: 26 MB peak RSS at 100,000 and at 1,000,000
        # pairs (write_pair_table with snakemake.script imported, dev box, 2026-12-06)
        mem_mb=200,
    conda:
        ENV
    script:
        "../../scripts/pairs_table.py"


rule report_figures:
    input:
        predictions="results/{sample}/prediction_results.tsv",
        summary="results/{sample}/summary.tsv",
        plan="results/{sample}/plan.json",
        # The shard files carry each embed job's metrics.
        shards=lambda wc: [f for m in MODELS for f in shard_files(wc.sample, m)],
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
    log:
        "logs/{sample}/report_figures.log",
    benchmark:
        "benchmarks/{sample}/report_figures.tsv"
    resources:
        mem_mb=mem("report_figures"),
    conda:
        ENV
    script:
        "../../scripts/report_figures.py"
