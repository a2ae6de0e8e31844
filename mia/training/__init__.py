"""The training stage: a target CLIP trained on exactly its members (or loaded), cached
(docs/design.md §3)."""
