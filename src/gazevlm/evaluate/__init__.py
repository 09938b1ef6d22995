"""Evaluation: generation on the test split, text scores, intervals, paired tests, paper-shaped tables.

Modules: metrics (normalisation and scores), stats (bootstrap and paired tests), predict (the only
model-dependent code), tables, ablations (tables from DVC experiments), plots, stage (`run`).
Nothing heavy is imported here: the Sentence-BERT model loads on first use.
"""
