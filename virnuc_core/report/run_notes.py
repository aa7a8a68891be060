"""What a finished run tells its user: where the results are, how to build the report, and,
for the demo's tiny random models, that the calls mean nothing.

:func:`closing_lines` are the console's last lines after a successful run (the Snakefile's
``onsuccess:``), :func:`report_command` the ``snakemake --report`` command with the options that
say which workflow, where and with which config, taken from the run's own command line.
:func:`tiny_settings` names the config keys set to ``tiny``; with any of them set, the run is a
demo: :func:`write_demo_notice` writes ``results/{sample}/DEMO_MODELS_README.txt`` beside
``summary.tsv`` (the result tables keep their columns: parsers read them as they are).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

from virnuc_core.registry import FAMILIES
from virnuc_core.util.files import atomic_writer

NOTICE_NAME = "DEMO_MODELS_README.txt"
# Options of the run's command line that the report command needs too (the others are about
# executing jobs). Those taking a list take every word up to the next option.
_ONE_VALUE = ("-s", "--snakefile", "-d", "--directory", "--profile", "--workflow-profile")
_VALUES = ("--configfile", "--configfiles", "-C", "--config")
SHOWN_SAMPLES = 10  # samples listed one per line; the rest are counted


def tiny_settings(models: Mapping[str, str], classifier: str | None) -> list[str]:
    """The config keys set to ``tiny`` (the demo's seeded random models), e.g.
    ``["models.dnabert", "models.esm", "classifier"]``; empty for a real run."""
    keys = [f"models.{name}" for name, spec in sorted(models.items()) if spec == "tiny"]
    return keys + (["classifier"] if classifier == "tiny" else [])


def demo_warning(tiny: Sequence[str]) -> str:
    """One line saying the run's calls are meaningless, naming the keys set to ``tiny``."""
    keys = ", ".join(tiny[:-1]) + f" and {tiny[-1]} are" if len(tiny) > 1 else f"{tiny[0]} is"
    return (
        f"DEMO RUN: {keys} 'tiny' (random "
        "weights): every call and score of this run is MEANINGLESS; it only shows the pipeline "
        "working."
    )


def demo_notice(tiny: Sequence[str]) -> str:
    """The text of ``DEMO_MODELS_README.txt``."""
    published = ", ".join(f"{name}: {fam.published}" for name, fam in FAMILIES.items())
    return (
        f"{demo_warning(tiny)}\n\n"
        "summary.tsv, prediction_results.tsv, prediction_results_highestscore.tsv and viral.fa\n"
        "in this folder were made with tiny models of random weights, built in code so that the\n"
        "demo runs in minutes on a CPU. Do not read anything into them.\n\n"
        "For real calls, set in your config:\n"
        f"  models: {{{published}}}  (the defaults;\n"
        "      fetch them once with: virnuc-fetch-models --out models)\n"
        "  classifier: VirNucPro's 300_model.pth or 500_model.pth, matching chunk_length\n"
        "See the README, section 'Running on real data'.\n"
    )


def write_demo_notice(path: str | os.PathLike, tiny: Sequence[str]) -> None:
    """Write the notice when ``tiny`` names a key; otherwise remove a notice an earlier demo
    run left there (a real run in the same folder must not carry it)."""
    if tiny:
        with atomic_writer(path) as out:
            out.write(demo_notice(tiny))
    else:
        Path(path).unlink(missing_ok=True)


def _options(argv: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The report's options in ``argv`` (name, the words that give it), in order."""
    found: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(argv):
        name = argv[i].split("=", 1)[0]
        end = i + 1
        if name in _ONE_VALUE + _VALUES and "=" not in argv[i]:
            if name in _ONE_VALUE:
                end = min(i + 2, len(argv))
            while name in _VALUES and end < len(argv) and not argv[end].startswith("-"):
                end += 1
        if name in _ONE_VALUE + _VALUES:
            found.append((name, list(argv[i:end])))
        i = end
    return found


def report_command(argv: Sequence[str]) -> str:
    """``snakemake [the run's -s/-d/--profile/--configfile/--config ...] --report report.html``,
    to be typed where the run was started. ``argv``: the run's arguments (``sys.argv[1:]``)."""
    kept = [word for _, words in _options(argv) for word in words]
    return shlex.join(["snakemake", *kept, "--report", "report.html"])


def directory(argv: Sequence[str]) -> str | None:
    """The run's ``--directory`` as typed (where its results are), or None."""
    for name, words in _options(argv):
        if name in ("-d", "--directory"):
            return words[0].split("=", 1)[1] if "=" in words[0] else (words[1:] or [None])[0]
    return None


def results_prefix(argv: Sequence[str]) -> str:
    """What the run's result paths start with: its ``--directory`` as typed, with a slash."""
    where = directory(argv)
    return where.rstrip("/") + "/" if where else ""


def _listed(samples: Sequence[str], path: str, prefix: str) -> list[str]:
    """One line per sample (the first SHOWN_SAMPLES), then how many more."""
    lines = [f"  {prefix}{path.format(sample=s)}" for s in samples[:SHOWN_SAMPLES]]
    if len(samples) > SHOWN_SAMPLES:
        more = len(samples) - SHOWN_SAMPLES
        lines.append(f"  ... and {more} more samples: {prefix}{path.format(sample='<sample>')}")
    return lines


def closing_lines(
    samples: Iterable[str],
    targets: Collection[str] | None,
    *,
    classifier: str | None,
    tiny: Sequence[str],
    command: str,
    prefix: str = "",
    exists=os.path.exists,
) -> list[str]:
    """The console's last lines after a successful run: each sample's summary.tsv when the run
    made them (its targets include them), else its embeddings and validation; the report
    ``command``; the demo warning. ``targets``: the run's target files (None: unknown, every
    output); ``prefix``: put before every path (the working directory, when the run was started
    elsewhere). Nothing when the run's targets are none of these (a single step was asked for).
    """
    samples = list(samples)

    def made(path: str) -> list[str]:
        return [
            s for s in samples
            if (targets is None or path.format(sample=s) in targets)
            and exists(path.format(sample=s))
        ]  # fmt: skip

    summaries = made("results/{sample}/summary.tsv")
    features = made("results/{sample}/features.h5")
    validated = made("results/{sample}/validation/summary.json")
    if summaries:
        lines = ["virnuc finished. Per-read results (one row per read; every column: "
                 "docs/outputs.md):"]  # fmt: skip
        lines += _listed(summaries, "results/{sample}/summary.tsv", prefix)
    elif features or validated:
        why = "no classifier is set, so the run stopped after" if not classifier else "made"
        lines = [f"virnuc finished: {why} the embeddings and their validation:"]
        lines += _listed(features, "results/{sample}/features.h5", prefix)
        lines += _listed(validated, "results/{sample}/validation/summary.json", prefix)
        if not classifier:
            lines.append("Set 'classifier' (VirNucPro's 300_model.pth or 500_model.pth) to get "
                         "predictions.")  # fmt: skip
    else:
        return []
    lines.append(f"The report ({prefix}report.html, one self-contained file): {command}")
    if tiny:
        where = summaries[0] if len(summaries) == 1 else "<sample>"
        notice = f" See {prefix}results/{where}/{NOTICE_NAME}." if summaries else ""
        lines.append(demo_warning(tiny) + notice)
    return lines
