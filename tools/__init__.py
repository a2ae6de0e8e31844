"""Maintainer scripts behind make targets that regenerate committed files (docs/development.md)."""
