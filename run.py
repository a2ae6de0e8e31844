"""Train target CLIPs, attack them, write results.json:  python run.py [-m] key=value ..."""
import sys

import hydra


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    from mia.pipeline import run  # imported late so that --help and config errors come fast

    return run(cfg)


if __name__ == "__main__":
    # The experiment group sits in the defaults list (as null), so Hydra would refuse its usual
    # `+experiment=<name>` spelling; here both spellings select the study.
    sys.argv = [a[1:] if a.startswith("+experiment=") else a for a in sys.argv]
    main()
