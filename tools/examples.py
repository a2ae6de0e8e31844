"""`make examples`: docs/examples/results.json and scores.parquet, the samples docs/outputs.md
describes, from a fresh `debug=small` job (seconds on a CPU; its corpus is generated in a temporary
folder). The job runs as a user would run it, `python run.py debug=small`, under a
temporary MIA_ROOT; the paths it records are then written relative to that root, so the sample holds
no path of the machine that made it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["run.py", "debug=small"]  # W&B offline, as by default


def relative(value, root: str):
    """`value` with every string under `root` made relative to it ('.' for the root itself)."""
    if isinstance(value, dict):
        return {k: relative(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [relative(v, root) for v in value]
    if isinstance(value, str) and (value == root or value.startswith(root + os.sep)):
        return os.path.relpath(value, root)
    return value


def main(out: Path = ROOT / "docs" / "examples") -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = os.path.realpath(tmp)
        env = {**os.environ, "MIA_ROOT": tmp, "WANDB_SILENT": "true"}
        subprocess.run([sys.executable, *COMMAND], cwd=ROOT, env=env, check=True)
        (job,) = Path(tmp, "outputs", "runs").iterdir()
        record = relative(json.loads((job / "results.json").read_text(encoding="utf-8")), tmp)
        out.mkdir(parents=True, exist_ok=True)
        # as the job writes it (mia/evaluation/results.py)
        (out / "results.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        shutil.copyfile(job / record["scores"], out / "scores.parquet")
    print(f"examples: {out}/results.json, {out}/scores.parquet")
    return out


if __name__ == "__main__":
    main()
