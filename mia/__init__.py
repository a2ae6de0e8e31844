"""mia: membership inference attacks on CLIP-style models with i.i.d. member / non-member splits."""

# The one place the version is written: pyproject.toml reads it from here (setuptools' dynamic
# version), `mia --version` prints it; CITATION.cff and CHANGELOG.md state it too
# (tests/test_docs.py).
__version__ = "0.2.0"
