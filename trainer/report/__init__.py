"""Evaluation beyond the means: reference-free scoring, intervals, breakdowns, divergence alerts and the HTML report."""
