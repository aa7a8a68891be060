"""Rule plan_shards: cut each model's frames into shards of equal distinct work."""

from virnuc_core.plan import plan_shards
from virnuc_core.step import run_step


def main(sm) -> None:
    models = list(sm.params.models)
    plan_shards(
        sm.input.index,
        {"dnabert": sm.input.frames, "esm": sm.input.proteins},
        sm.params.shards,
        sm.params.dedupe,
        sm.output.plan,
        dict(zip(models, sm.output.sources, strict=True)),
    )


run_step(snakemake, main)  # noqa: F821 - the object Snakemake's script: directive provides
