"""Small helpers every layer uses: atomic files, .npy streams, digests, damage checks,
safe unpickling, progress lines, and the workflow's own FASTA read back by byte offset.

Imports nothing else from virnuc_core."""
