"""Benchmarks of the workflow and its models: ``python -m bench.NAME`` from the repository root.

Each bench is one module run as a script; what they share is :mod:`bench._harness` (the job's
settings, packing and device loop, timing, result files). ``make_reads`` and ``make_models``
generate inputs (reads; random-weight model files) for the benches and the demo.
Results, with the command and machine of each run: ``bench/results/`` (index in its README).
"""
