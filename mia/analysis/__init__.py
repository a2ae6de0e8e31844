"""Analyses that read only an attack's per-pair scores (a job's scores.parquet), never the model."""
