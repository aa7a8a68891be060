"""The sample's data, before any model: reading reads (FASTA/FASTQ, compressed, paired), RNA
as DNA, chunking and six-frame selection, the binary frames index, and duplicate frames.

Imports only :mod:`virnuc_core.util`; never the engine."""
