"""Train target CLIPs, attack them, write results.json:  python run.py [-m] key=value ...  (--help: the groups)"""

import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    from mia.pipeline import run  # imported late so that --help and config errors come fast
    from mia.validate import ConfigError

    try:
        return run(cfg)
    except ConfigError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _discard_unused(Path(HydraConfig.get().runtime.output_dir))
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def _discard_unused(out: Path):
    """A job refused before any work leaves no folder: Hydra made it, with its config and log, only."""
    if out.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in out.iterdir()):
        shutil.rmtree(out)


if __name__ == "__main__":
    # The experiment group sits in the defaults list (as null), so Hydra would refuse its usual
    # `+experiment=<name>` spelling; here both spellings select the study.
    sys.argv = [a[1:] if a.startswith("+experiment=") else a for a in sys.argv]
    main()
