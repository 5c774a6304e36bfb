"""Data-centric analysis: verb–noun pairs, overlap with the seeds, lengths, tree statistics, the report.

Entry point: `explore_instruct.analysis.report.analyze(datasets, out_dir, seeds=...)`; the CLI is `analyze`.
"""
