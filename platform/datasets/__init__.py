"""Datasets: exports of a study's stimuli and votes in the formats researchers load."""
