"""The report side (login node, no torch): status, logs, list, cancel, what became of a job, and
runs side by side (compare)."""
