"""The evaluation stage: each attack's scores turned into metrics (docs/design.md §5), dataset
inference, the target's utility, and the job's record in results.json and scores.parquet (§10)."""
