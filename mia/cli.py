"""The `mia` command, also `python run.py` and `python -m mia`: train target CLIPs, attack them,
write results.json.  mia [-m] key=value ...  (--help: the groups and studies; --version)

Exit status: 0 done; 2 a setting refused before any work (one line naming the key and the fix,
Hydra's own composition errors included); 128 + the signal for a job interrupted by SIGTERM or
SIGINT (one line saying how to resume); 1 any other failure (Hydra's shortened traceback)."""

import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

import hydra
import hydra._internal.utils as hydra_utils
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf.errors import OmegaConfBaseException

from mia import __version__
from mia.pipeline import run
from mia.validate import ConfigError

# An absolute path, so that the command finds the config tree from any working directory.
CONF = Path(__file__).resolve().parents[1] / "conf"
_MAIN_PID = os.getpid()  # the command's own process, not a worker forked from it
_COMMAND = "mia"  # the command line as typed (main sets it), for the line of an interrupted job
_started = False  # the job function was entered: Hydra composed the config without error


class Interrupted(BaseException):
    """SIGTERM or SIGINT, raised where the job stands: not an Exception, so that nothing on the way
    swallows it; Lightning's fit passes it on after its teardown, and the target's epoch-end
    checkpoint stays in the cache for the next run."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum, frame):
    if os.getpid() != _MAIN_PID:  # a forked child (a data-loading worker) ends as it would have
        signal.signal(signum, signal.SIG_DFL)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)
        return
    raise Interrupted(signum)


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def job(cfg):

    global _started
    _started = True
    for signum in (signal.SIGTERM, signal.SIGINT):  # what a scheduler, `kill` and Ctrl-C send
        signal.signal(signum, _interrupt)
    try:
        return run(cfg)
    except ConfigError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _discard_unused(Path(HydraConfig.get().runtime.output_dir))
        _discard_sweep()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as sig:
        print(
            f"interrupted by {signal.Signals(sig.signum).name}; a target being trained resumes "
            f"from its last epoch-end checkpoint when the same command runs again: {_COMMAND}",
            file=sys.stderr,
        )
        sys.exit(128 + sig.signum)


def _hydra_errors(report):
    """Hydra's run_and_report, with its composition errors (an unknown option or key, a bad
    override) printed as one line with exit status 2, as mia's own config errors are; errors of a
    job that started keep Hydra's report."""

    def run_and_report(func):
        def composed():
            try:
                return func()
            except CompactHydraException as err:
                if _started or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                _discard_sweep()
                print(f"error: {_one_line(err)}", file=sys.stderr)
                sys.exit(2)

        return report(composed)

    return run_and_report


class SweepFolder(Callback):
    """Notes where a multirun writes (conf/hydra/default.yaml registers it), so that a sweep refused
    before its first job leaves no folder behind."""

    path: Path | None = None

    def on_multirun_start(self, config, **kwargs):
        SweepFolder.path = Path(config.hydra.sweep.dir)


def _discard_sweep():
    """A sweep refused before its first job leaves no folder: Hydra made it for multirun.yaml."""
    out = SweepFolder.path
    if out is not None and out.is_dir() and all(p.name == "multirun.yaml" for p in out.iterdir()):
        shutil.rmtree(out)


def _one_line(err: CompactHydraException) -> str:
    """Hydra's message on one line: the list of valid options kept (comma-separated), the config
    search path and OmegaConf's key details left out."""
    text = str(err)
    if isinstance(err.__cause__, OmegaConfBaseException):
        text += "\n" + str(err.__cause__)
    text = text.split("Config search path:")[0]
    parts, listing = [], False
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith(("full_key:", "object_type=")):
            continue
        if parts and parts[-1].endswith(":"):
            parts[-1] += " " + line
            listing = True
        elif listing and " " not in line:
            parts[-1] += ", " + line
        else:
            parts.append(line.rstrip("."))
            listing = False
    return "; ".join(parts)


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
    global _COMMAND
    _COMMAND = _command(sys.argv)
    hydra_utils.run_and_report = _hydra_errors(hydra_utils.run_and_report)
    job()


def _command(argv) -> str:
    """The command line as the user typed it, to run again."""
    name = Path(argv[0]).name
    program = {"run.py": "python run.py", "__main__.py": "python -m mia"}.get(name, "mia")
    return " ".join([program, *map(shlex.quote, argv[1:])])
