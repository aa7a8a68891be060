"""Measured constants the runtime plans with (package data): embedding throughputs per GPU
and model (throughputs.json), each rule's memory (memory.json). Where each figure was measured:
the files they name under bench/results/."""
