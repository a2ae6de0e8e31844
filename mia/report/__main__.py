"""`python -m mia.report <sweep dir>`: the sweep report, rebuilt from the jobs' results."""

from mia.report.cli import main

main()
