"""The workflow's steps as library calls: shard plan, embed job and its resume store, reference
rows and validation, finalize and merge, GPU claims, step plumbing, memory per rule.

Above the settings and the registry; below :mod:`virnuc_core.report`."""
