# virnuc: VirNucPro-style viral sequence detection (chunk, six-frame, embed, validate, classify).
# The rules live in workflow/rules/, one file per stage; every algorithm lives in virnuc_core.
from snakemake.utils import min_version, validate

min_version("9.0")


# config/config.yaml unless the user gave --configfile (merging the two would mix their samples).
if not config:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


# The front page of `snakemake --report report.html`.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_outputs,
    default_target: True
