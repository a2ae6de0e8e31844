"""Defenses a target is trained or released with (the `defense` config group, docs/design.md §11).
Each lives in its own module behind mia.defenses.base.Defense; conf/defense/<name>.yaml names its
class with `_target_`, and the job builds it once (mia/training/spec.py)."""
