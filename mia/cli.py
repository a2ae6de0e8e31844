"""The `mia` command, also `python run.py` and `python -m mia`: train target CLIPs, attack them,
write results.json.  mia [-m] key=value ...  (--help: the groups and studies; --version)"""

import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from mia import __version__

# An absolute path, so that the command finds the config tree from any working directory.
CONF = Path(__file__).resolve().parents[1] / "conf"


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def job(cfg):
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
    """A job refused before any work leaves no folder: Hydra made it, holding its config and log."""
    if out.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in out.iterdir()):
        shutil.rmtree(out)


def main():
    """The command line in sys.argv, as Hydra reads it, with two exceptions: --version prints mia's
    version (Hydra's would print its own), and `+experiment=<name>` is read as `experiment=<name>`:
    the experiment group sits in the defaults list (as null), so Hydra would refuse that form."""
    if "--version" in sys.argv[1:]:
        print(f"mia {__version__}")
        return
    sys.argv = [a[1:] if a.startswith("+experiment=") else a for a in sys.argv]
    job()
