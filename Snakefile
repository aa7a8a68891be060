# virnuc: VirNucPro-style viral sequence detection (chunk, six-frame, embed, validate, classify).
# The rules live in workflow/rules/, one file per stage; every algorithm lives in virnuc_core.
import sys

from snakemake.utils import min_version, validate

min_version("9.0")
sys.path.insert(0, workflow.basedir)  # this checkout's library, as in common.smk
from virnuc_core.settings import refuse_removed_keys  # noqa: E402


# config/config.yaml unless the user gave --configfile (merging the two would mix their samples).
if not config:

    configfile: "config/config.yaml"


# Keys of levers that left the library: say why and what to do, before the schema's refusal.
try:
    refuse_removed_keys(config)
except ValueError as e:
    raise WorkflowError(str(e)) from None
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


# GPUs asked for (--resources gpu=N, profiles/local-2gpu) where none is visible: the models run
# on the CPU (fine for small inputs); say so at the start, with the plans' CPU time. In onstart:
# only then does Snakemake know whether the jobs run here (not on a cluster's GPU nodes).
onstart:
    if workflow.local_exec and run_gpus() > 0:
        from virnuc_core.jobs.gpu import no_gpu_reason
        from virnuc_core.jobs.run_plan import cpu_note

        if (_why := no_gpu_reason()) is not None:
            _plans = {s: f"results/{s}/plan.json" for s in SAMPLES}
            logger.warning(cpu_note(run_gpus(), _why, _plans))


# After a successful run, the console's last lines say where the results are, how to build the
# report and, for the demo's tiny models, that the calls mean nothing (workflow/rules/report.smk).
onsuccess:
    say_where_results_are()
