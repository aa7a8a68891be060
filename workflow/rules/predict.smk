# Classify every frame, then call each chunk viral or not (spec section 4).


rule predict:
    input:
        features="results/{sample}/features.h5",
    output:
        frames="results/{sample}/prediction_results.tsv",
        chunks="results/{sample}/prediction_results_highestscore.tsv",
    params:
        step=step("predict"),
        classifier=CLASSIFIER_ARG,
    log:
        "logs/{sample}/predict.log",
    conda:
        ENV
    shell:
        "{params.step} --features {input.features} {params.classifier}"
        " --output {output.frames} --highest {output.chunks} 2> {log}"
