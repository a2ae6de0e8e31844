"""`make device-wheels`: the wheels a bare GPU machine needs to run mia, written to `.whl/`.

The GPU machines mia borrows (one H100 or H200, offline) come with torch, lightning, torchvision,
numpy, pandas, pyarrow, scikit-learn, scipy, matplotlib, filelock, tqdm, regex, huggingface-hub,
timm, safetensors, pyyaml and pytest, but not the packages below, and cannot reach PyPI. Each is
downloaded here as a wheel at the version this checkout's .venv runs (pyproject.toml's pin for a
direct dependency), for CPython 3.12 on x86-64 Linux; benchmarks/device.sh installs them there.
wandb is left out: jobs there run with logger=none, and its wheel alone is larger than the budget.
pytest and its plugin manager go to `.whl/pytest/`, installed only where pytest is missing.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What mia, run.py and the benchmarks import at runtime (or what that imports) and the GPU image
# lacks.
RUNTIME = [
    "open_clip_torch",
    "ftfy",
    "wcwidth",
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",
    "webdataset",
    "braceexpand",
]
PYTEST = ["pytest", "pluggy", "iniconfig"]
# .whl/ travels with the working tree to the GPU machine, which carries 64 MiB in all
BUDGET = 64 << 20
PLATFORM = [
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    "--platform",
    "manylinux_2_28_x86_64",
    "--platform",
    "manylinux_2_17_x86_64",
    "--platform",
    "manylinux2014_x86_64",
    "--platform",
    "any",
]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def pins() -> dict:
    """{normalised name: version} of pyproject.toml's quoted `name==version` pins (dependencies and
    extras; no tomllib, which Python 3.10 lacks)."""
    text = (ROOT / "pyproject.toml").read_text()
    return {_norm(n): v for n, v in re.findall(r'"([A-Za-z0-9_.-]+)==([^"\s;]+)"', text)}


def version(name: str, pinned: dict) -> str:
    """pyproject's pin of `name`, else the version installed beside this interpreter (what pip
    resolved against those pins); a pin the environment contradicts is refused."""
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    want = pinned.get(_norm(name), installed)
    if want is None:
        sys.exit(
            f"device-wheels: {name} is neither pinned in pyproject.toml nor installed here: run "
            "`make` first"
        )
    if installed is not None and installed != want:
        sys.exit(
            f"device-wheels: pyproject.toml pins {name}=={want} but {installed} is installed: "
            "rebuild .venv (rm -rf .venv; make test)"
        )
    return want


def fetch(name: str, ver: str, dest: Path) -> Path:
    """The wheel of name==ver in `dest`: kept if there, else downloaded as a binary, else (a package
    published as source only, like antlr4-python3-runtime 4.9.3) built from its sdist, which is
    pure Python and gives a py3-none-any wheel."""
    dest.mkdir(parents=True, exist_ok=True)
    found = _wheel(name, ver, dest)
    if found is not None:
        return found
    pip = [sys.executable, "-m", "pip", "-q"]
    spec = f"{name}=={ver}"
    done = subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", *PLATFORM, "-d", str(dest), spec]
    )
    if done.returncode != 0:
        print(
            f"device-wheels: no wheel of {spec} on the index; building one from its source",
            file=sys.stderr,
        )
        subprocess.run(
            [*pip, "wheel", "--no-deps", "--no-binary", name, "-w", str(dest), spec], check=True
        )
    found = _wheel(name, ver, dest)
    if found is None:
        sys.exit(f"device-wheels: pip gave no wheel named {_norm(name)}-{ver}-*.whl in {dest}")
    return found


def _wheel(name: str, ver: str, dest: Path) -> Path | None:
    for w in sorted(dest.glob("*.whl")):
        parts = w.name.split("-")
        if _norm(parts[0]) == _norm(name) and parts[1] == ver:
            return w
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dest", nargs="?", default=str(ROOT / ".whl"))
    args = parser.parse_args(argv)
    dest, pinned = Path(args.dest), pins()
    wheels = [fetch(n, version(n, pinned), dest) for n in RUNTIME]
    wheels += [fetch(n, version(n, pinned), dest / "pytest") for n in PYTEST]
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"{w.stat().st_size / 1e6:8.2f} MB  {w.relative_to(dest)}")
    print(f"{total / 1e6:8.2f} MB  in {dest}")
    if total > BUDGET:
        sys.exit(
            f"device-wheels: {total / 2**20:.1f} MiB of wheels, more than the {BUDGET >> 20} MiB a "
            "GPU machine is sent"
        )


if __name__ == "__main__":
    main()
