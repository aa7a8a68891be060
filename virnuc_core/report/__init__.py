"""What users read: prediction tables, per-read and per-pair summaries and regions, throughput,
the HTML report and run notes. The top layer of the library."""
