"""docs/extending.md, followed step by step: each section's code blocks are written, as the page
says, into a copy of the tree (a new file, or the class and its import added to an existing one),
the lists it names get the new attack, and nothing outside the files the section names is touched.
Then the section's own test passes in that copy and a debug=small job runs the new attack, defense
or corpus end to end."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.caches import seed_cache

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
BLOCK = re.compile(r"```(python|yaml)\n(.*?)```", re.S)
PATH = re.compile(r"`((?:mia|conf|tests)/[\w/]+\.(?:py|yaml))`")
TOUCHES = re.compile(r"touches these files, and no others: (.*?)(?:\n\n|\Z)", re.S)
LISTS = re.compile(
    r"Add `- (\w+)` to the defaults of `(conf/attack/\w+\.yaml)`.*?of `(conf/attack/\w+\.yaml)`",
    re.S,
)


def section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def blocks(text: str):
    """(path, language, code) of each python / yaml block: the path is the first file the paragraph
    right before the block names."""
    for m in BLOCK.finditer(text):
        paragraph = text[: m.start()].rstrip().rsplit("\n\n", 1)[-1]
        found = PATH.search(paragraph)
        assert found, f"no file named right before the block at {m.group(2)[:60]!r}"
        yield found.group(1), m.group(1), m.group(2)


def add_to(path: Path, code: str):
    """A new file gets the code; an existing one gets its imports after its own and the rest at the
    end."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
        return
    lines = path.read_text().splitlines()
    imports = [c for c in code.splitlines() if c.startswith(("from ", "import "))]
    rest = "\n".join(c for c in code.splitlines() if c not in imports).strip("\n")
    last = max(i for i, line in enumerate(lines) if line.startswith(("from mia", "import ")))
    lines[last + 1 : last + 1] = imports
    path.write_text("\n".join(lines) + "\n\n\n" + rest + "\n")


def follow(title: str, tree: Path) -> set:
    """Write the section's blocks into `tree`; the files written, checked against those it names."""
    text = section(title)
    written = set()
    for rel, _, code in blocks(text):
        add_to(tree / rel, code)
        written.add(rel)
    for name, *lists in LISTS.findall(text):
        for rel in lists:
            path = tree / rel
            path.write_text(path.read_text().replace("  - _self_\n", f"  - {name}\n  - _self_\n"))
            written.add(rel)
    named = set(PATH.findall(TOUCHES.search(text).group(1)))
    assert written <= named, (
        f"{title}: writes {sorted(written - named)}, which the page does not name"
    )
    return written


@pytest.fixture
def tree(tmp_path):
    """A copy of the tree: the package, configs, tests and run.py."""
    copy = tmp_path / "tree"
    for part in ("mia", "conf", "tests"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "run.py", copy / "run.py")
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def run(tree: Path, *args, timeout=900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree), "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def job(tree: Path, small_cache: Path, *overrides) -> dict:
    """results.json of a debug=small job in the copy, on the session's cached corpus."""
    root = tree / "job"
    seed_cache(small_cache, root / ".cache")
    run(tree, "run.py", "debug=small", "logger=none", f"paths.root_dir={root}", *overrides)
    (found,) = root.rglob("results.json")
    return json.loads(found.read_text())


def test_add_an_attack(tree, small_cache):
    written = follow("Add an attack", tree)
    assert "mia/evaluation/scoring.py" not in written
    run(tree, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/attacks/test_csa_rank.py")
    record = job(tree, small_cache, "attack=[csa,csa_rank]")
    entry = record["attacks"]["csa_rank"]
    assert "vs_csa" in entry and "vs_csa" not in record["attacks"]["csa"]
    # it reads D_no, as its trait says: its thresholds set on D_no are flagged
    assert entry["calibrated"] and all(
        c["threshold_from_training_pairs"] for c in entry["calibrated"]
    )
    assert not any(
        c["threshold_from_training_pairs"] for c in record["attacks"]["csa"]["calibrated"]
    )


def test_add_a_defense(tree, small_cache):
    follow("Add a defense", tree)
    run(tree, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/defenses/test_image_noise.py")
    record = job(tree, small_cache, "defense=image_noise")
    assert record["defense"]["name"] == "image_noise" and "csa" in record["attacks"]


def test_add_a_corpus(tree, small_cache):
    follow("Add a corpus", tree)
    run(tree, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/data/test_squares.py")
    record = job(tree, small_cache, "data=squares")
    assert record["data"]["corpus"] == "squares" and "csa" in record["attacks"]
