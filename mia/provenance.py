"""What produced a result: the code version every results.json and target.json records."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_revision() -> str:
    """HEAD's commit, with `-dirty` when tracked files differ from it; `unknown` outside a
    checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
