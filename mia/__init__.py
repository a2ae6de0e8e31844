"""mia: membership inference attacks on CLIP-style models with i.i.d. member / non-member splits."""

# Equal to pyproject.toml's version (tests/test_docs.py checks it); CITATION.cff and CHANGELOG.md
# state it too.
__version__ = "0.1.0"
