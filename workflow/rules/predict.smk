# Classify every frame, then call each chunk viral or not (spec section 4).


rule predict:
    input:
        unpack(lambda wc: CLASSIFIER_INPUT),
        features="results/{sample}/features.h5",
    output:
        frames="results/{sample}/prediction_results.tsv",
        chunks="results/{sample}/prediction_results_highestscore.tsv",
    params:
        classifier=SETTINGS.classifier,
    log:
        "logs/{sample}/predict.log",
    benchmark:
        "benchmarks/{sample}/predict.tsv"
    resources:
        mem_mb=mem("predict"),
    conda:
        ENV
    script:
        "../../scripts/predict.py"
