"""Train target CLIPs, attack them, write results.json:  python run.py [-m] key=value ...
(--help: the groups; --version). The same command as `mia` and `python -m mia` (mia/cli.py)."""

from mia.cli import main

if __name__ == "__main__":
    main()
