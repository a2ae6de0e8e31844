"""`python -m mia`: the `mia` command (mia/cli.py)."""

from mia.cli import main

main()
