"""The documentation is checked like code, in seconds, without training anything:

- every `python run.py ...` command in a fenced code block of README.md, docs/*.md and
  experiments/*.md composes with Hydra against conf/ (a sweep `a=1,2` is composed at its first
  value, `-m` dropped, `+experiment=` read as run.py reads it, `<placeholders>` kept as strings);
  every `make <target>` names a Makefile target, every `python -m <module>` a module of the
  repository;
- every relative link in those files resolves to a file or folder of the repository;
- every decimal figure of a README paragraph that links an experiments page appears verbatim on that
  page (a paragraph: lines up to a blank line, a list item, a table row or a heading);
- `python run.py --help` starts with mia's own usage; the version is one number everywhere.

The checkers return a list of failures (file:line, what, why), so a failing test names every broken
command, link and figure at once. `test_checkers_catch_broken_docs` runs them on a small broken
sample.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def doc_files(root: Path = ROOT) -> list[Path]:
    """The user-facing markdown: the README, docs/ and the experiments pages."""
    files = [
        root / "README.md",
        *sorted((root / "docs").glob("*.md")),
        *sorted((root / "experiments").glob("*.md")),
    ]
    return [f for f in files if f.is_file()]


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


# --- markdown structure --------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")


def split_fenced(text: str):
    """(code blocks, prose): each code block as [(line number, line)], prose as {line number:
    line}."""
    blocks, prose, current, marker = [], {}, None, None
    for no, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if current is None and m:
            current, marker = [], m.group(1)
        elif current is not None and m and line.strip().startswith(marker):
            blocks.append(current)
            current = None
        elif current is not None:
            current.append((no, line))
        else:
            prose[no] = line
    if current is not None:
        blocks.append(current)
    return blocks, prose


def logical_lines(block):
    """A code block's lines with trailing backslashes joined: [(first line number, text)]."""
    out, pending, start = [], "", None
    for no, line in block:
        if start is None:
            start = no
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending, start = "", None
    if pending:
        out.append((start, pending))
    return out


# --- commands ------------------------------------------------------------------------------------

# Hydra's command-line flags: those that take a value, and those that do not.
VALUE_FLAGS = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
    "--info",
    "-i",
    "-sc",
    "--shell-completion",
}
PLAIN_FLAGS = {
    "-m",
    "--multirun",
    "--help",
    "-h",
    "--hydra-help",
    "--resolve",
    "--run",
    "-r",
    "--version",
}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"<[^<>\n]+>")
SEPARATORS = {"&&", "||", ";", "|"}


def make_targets(makefile: Path) -> set[str]:
    if not makefile.is_file():
        return set()
    text = makefile.read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M)}


def segments(command: str) -> list[list[str]]:
    """A shell line as its simple commands (split at &&, ||, ;, |), comments dropped. A
    <placeholder> is one word, as the reader means it (the shell would take it for a
    redirection)."""
    quoted = PLACEHOLDER.sub(lambda m: "'" + m.group(0).replace("'", "") + "'", command)
    words = shlex.split(quoted, comments=True)
    out, current = [], []
    for w in words:
        if w in SEPARATORS:
            out.append(current)
            current = []
        else:
            current.append(w)
    out.append(current)
    return [s for s in out if s]


def _is_python(word: str) -> bool:
    return re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", word) is not None


def run_py_arguments(words: list[str]) -> list[str] | None:
    """The arguments of `[ENV=...] python run.py ARGS`, or None for any other command."""
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    if len(words) >= 2 and _is_python(words[0]) and Path(words[1]).name == "run.py":
        return words[2:]
    return None


def overrides_of(arguments: list[str], conf: Path = CONF) -> tuple[str, list[str]]:
    """(config name, overrides) that `python run.py ARGUMENTS` composes for its first job: flags
    dropped, `+experiment=` read as run.py reads it, a sweep at its first value, placeholders
    quoted, and a placeholder standing for a group option (experiment=<name>) left out."""
    config_name, raw, args = "config", [], list(arguments)
    while args:
        a = args.pop(0)
        if a in PLAIN_FLAGS:
            continue
        if a in VALUE_FLAGS:
            value = args.pop(0) if args else ""
            if a in ("--config-name", "-cn"):
                config_name = value
            continue
        if a.startswith("-") and "=" not in a:
            raise ValueError(f"unknown flag {a}")
        a = a[1:] if a.startswith("+experiment=") else a  # as run.py does
        key, sep, value = a.partition("=")
        if sep and PLACEHOLDER.search(value):
            if (conf / key.lstrip("+~")).is_dir():
                continue  # a placeholder option of a config group: nothing to compose
            a = f"{key}='{value}'"
        raw.append(a)
    first = []
    for o in OverridesParser.create().parse_overrides(raw):
        if isinstance(o.value(), Glob):  # glob(*) over a config group: its first matching option
            options = sorted(p.stem for p in (conf / o.key_or_group).glob("*.yaml"))
            first.append(f"{o.get_key_element()}={o.value().filter(options)[0]}")
        elif o.is_sweep_override():
            first.append(f"{o.get_key_element()}={next(o.sweep_string_iterator())}")
        else:
            first.append(o.input_line)
    return config_name, first


def _module_exists(root: Path, module: str) -> bool:
    path = root.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


def check_commands(files: list[Path], root: Path = ROOT, conf: Path = CONF) -> list[str]:
    """Every run.py command composes, every make target exists, every `python -m` module of the
    repository exists; one failure string per broken command."""
    failures, to_compose = [], []
    targets = make_targets(root / "Makefile")
    for path in files:
        blocks, _ = split_fenced(path.read_text(encoding="utf-8"))
        for block in blocks:
            for no, line in logical_lines(block):
                text = line.strip()
                text = text[2:] if text.startswith("$ ") else text
                where = f"{_rel(path, root)}:{no}: {text}"
                try:
                    words_list = segments(text)
                except ValueError as err:
                    if "run.py" in text or text.startswith("make "):
                        failures.append(f"{where}\n    cannot split into words: {err}")
                    continue
                for words in words_list:
                    arguments = run_py_arguments(words)
                    if arguments is not None:
                        to_compose.append((where, arguments))
                    elif words[0] == "make":
                        for t in words[1:]:
                            if not t.startswith("-") and "=" not in t and t not in targets:
                                failures.append(f"{where}\n    no target {t!r} in the Makefile")
                    elif len(words) >= 3 and _is_python(words[0]) and words[1] == "-m":
                        module = words[2]
                        if module.split(".")[0] in {"mia", "benchmarks"} and not _module_exists(
                            root, module
                        ):
                            failures.append(f"{where}\n    no module {module} in the repository")
    if to_compose:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            for where, arguments in to_compose:
                try:
                    config_name, overrides = overrides_of(arguments, conf)
                    compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
                except Exception as err:  # any composition error is the finding
                    message = (
                        str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    )
                    failures.append(f"{where}\n    does not compose: {message}")
    return failures


# --- links ---------------------------------------------------------------------------------------

INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def link_targets(line: str) -> list[str]:
    line = INLINE_CODE.sub("", line)
    return LINK.findall(line) + REFERENCE.findall(line) + HTML_LINK.findall(line)


def check_links(files: list[Path], root: Path = ROOT) -> list[str]:
    """Every relative link (and image) outside code resolves to a path inside the repository;
    anchors are not checked, web links are not followed."""
    failures, root = [], root.resolve()
    for path in files:
        _, prose = split_fenced(path.read_text(encoding="utf-8"))
        for no, line in prose.items():
            for target in link_targets(line):
                if SCHEME.match(target) or target.startswith("#"):
                    continue
                file_part = unquote(target.split("#", 1)[0].split("?", 1)[0])
                base = root if file_part.startswith("/") else path.parent
                resolved = (base / file_part.lstrip("/")).resolve()
                if not resolved.is_relative_to(root):
                    failures.append(
                        f"{_rel(path, root)}:{no}: {target} points outside the repository"
                    )
                elif not resolved.exists():
                    failures.append(f"{_rel(path, root)}:{no}: {target} does not exist")
    return failures


# --- figures -------------------------------------------------------------------------------------

DECIMAL = re.compile(r"(?<![\w.§])\d+\.\d+(?!\.?\d)")
LIST_ITEM = re.compile(r"^\s*([-*+]|\d+\.)\s")


def paragraphs(prose: dict) -> list[list[tuple[int, str]]]:
    """Prose as units of meaning, each a list of (line number, line): a paragraph ends at a blank
    line or a code block; a list item, a table row and a heading are units of their own."""
    units, current, last = [], [], None
    for no in sorted(prose):
        line = prose[no]
        starts = LIST_ITEM.match(line) or line.lstrip().startswith(("|", "#"))
        if current and (not line.strip() or starts or no != last + 1):
            units.append(current)
            current = []
        if line.strip():
            current.append((no, line))
            if line.lstrip().startswith(("|", "#")):
                units.append(current)
                current = []
        last = no
    if current:
        units.append(current)
    return units


def figures(text: str) -> list[str]:
    """The decimal figures a line of prose quotes: outside code spans, link targets and images."""
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = INLINE_CODE.sub("", text)
    return DECIMAL.findall(text)


def check_figures(readme: Path, root: Path = ROOT) -> list[str]:
    """Every decimal figure of a README paragraph that links one or more experiments pages appears
    verbatim on one of them."""
    failures, root = [], root.resolve()
    _, prose = split_fenced(readme.read_text(encoding="utf-8"))
    for unit in paragraphs(prose):
        pages = []
        for target in link_targets(" ".join(line.strip() for _, line in unit)):
            page = (readme.parent / unquote(target.split("#", 1)[0])).resolve()
            if (
                not SCHEME.match(target)
                and page.suffix == ".md"
                and page.parent == root / "experiments"
                and page.is_file()
                and page not in pages
            ):
                pages.append(page)
        if not pages:
            continue
        texts = [p.read_text(encoding="utf-8") for p in pages]
        for no, line in unit:
            for figure in figures(line):
                on_page = re.compile(rf"(?<![\d.]){re.escape(figure)}(?!\d)")
                if not any(on_page.search(t) for t in texts):
                    names = ", ".join(_rel(p, root) for p in pages)
                    failures.append(f"{_rel(readme, root)}:{no}: {figure} is not on {names}")
    return failures


# --- the tests -----------------------------------------------------------------------------------


def _report(failures: list[str]) -> str:
    return f"{len(failures)} problem(s):\n" + "\n".join(failures)


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: _rel(p, ROOT))
def test_commands_in_docs_compose(doc):
    failures = check_commands([doc])
    assert not failures, _report(failures)


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: _rel(p, ROOT))
def test_links_in_docs_resolve(doc):
    failures = check_links([doc])
    assert not failures, _report(failures)


def test_readme_figures_are_on_the_linked_experiments_pages():
    failures = check_figures(ROOT / "README.md")
    assert not failures, _report(failures)


def test_overrides_as_run_py_reads_them():
    assert overrides_of(["-m", "data.size=1k,4k", "attack=csa,wsa", "train.epochs=5"]) == (
        "config",
        ["data.size=1k", "attack=csa", "train.epochs=5"],
    )
    assert overrides_of(["attack=[csa,wsa]", "+experiment=gap_scaling"]) == (
        "config",
        ["attack=[csa,wsa]", "experiment=gap_scaling"],
    )
    assert overrides_of(["-m", "+privacy_utility=glob(*)"])[1] == [
        "+privacy_utility=augment_image_strong"
    ]
    _, placeholder = overrides_of(
        ["target=checkpoint", "target.path=<checkpoint>", "experiment=<name>"]
    )
    assert placeholder == ["target=checkpoint", "target.path='<checkpoint>'"]
    (words,) = segments(
        "MIA_ROOT=/tmp/x python run.py data.members=<member shards> logger=none  # a comment"
    )
    assert run_py_arguments(words) == ["data.members=<member shards>", "logger=none"]
    assert overrides_of(run_py_arguments(words))[1] == [
        "data.members='<member shards>'",
        "logger=none",
    ]


def test_checkers_catch_broken_docs(tmp_path):
    """A sample with one good and one broken thing of each kind: only the broken ones are
    reported."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "experiments").mkdir()
    (tmp_path / "Makefile").write_text("run:\n\tpython run.py\n")
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n")
    (tmp_path / "experiments" / "study.md").write_text("| N | AUC |\n|---|---|\n| 1k | 0.982 |\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Sample\n\n"
        "```bash\n"
        "python run.py data.size=2k attack=csa          # fine\n"
        "python run.py attak=csa                         # no such group or key\n"
        "python run.py -m data.size=1k,4k 'attack=[csa,wsa]' \\\n"
        "    train.epochs=5                              # fine: a sweep, "
        "composed at its first value\n"
        "python run.py data.size=1k trian.epochs=5       # a typo in a key\n"
        "make run\n"
        "make deploy\n"
        "python -m mia.nowhere\n"
        "```\n\n"
        "See [the guide](docs/guide.md), [a missing page](docs/missing.md) and "
        "`[code](not/a/link.md)`.\n\n"
        "**A finding** ([experiments/study.md](experiments/study.md)). CSA reaches 0.982 at 1k,\n"
        "and 0.777 at 4k.\n"
    )
    commands = check_commands([readme], root=tmp_path)
    assert len(commands) == 4, _report(commands)
    assert "attak=csa" in commands[0] or any("attak=csa" in c for c in commands)
    assert any("trian.epochs" in c for c in commands)
    assert any("'deploy'" in c for c in commands)
    assert any("mia.nowhere" in c for c in commands)
    assert not any("data.size=2k" in c or "make run" in c or "1k,4k" in c for c in commands)
    links = check_links([readme], root=tmp_path)
    assert len(links) == 1 and "docs/missing.md does not exist" in links[0], _report(links)
    figures_ = check_figures(readme, root=tmp_path)
    assert len(figures_) == 1 and "0.777 is not on experiments/study.md" in figures_[0], _report(
        figures_
    )


def test_help_starts_with_mias_own_usage():
    out = subprocess.run(
        [sys.executable, "run.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("mia: membership inference attacks on CLIP"), out.stdout[:500]
    for section in (
        "== Examples ==",
        "python run.py experiment=gap_scaling",
        "== Flags ==",
        "--multirun,-m",
    ):
        assert section in out.stdout
    assert out.stdout.index("== Examples ==") < out.stdout.index("== Flags ==")


def _code_constants(name: str) -> set[int]:
    """SCHEMA_VERSION in every `<name>` module of the package, wherever the package keeps it."""
    found = {
        int(m.group(1))
        for path in (ROOT / "mia").rglob(name)
        for m in [re.search(r"^SCHEMA_VERSION\s*=\s*(\d+)", path.read_text(encoding="utf-8"), re.M)]
        if m
    }
    assert found, f"no SCHEMA_VERSION in any mia/**/{name}"
    return found


def test_schema_versions_in_the_docs_match_the_code_and_the_samples():
    import json

    import pyarrow.parquet as pq

    table = (ROOT / "docs" / "outputs.md").read_text(encoding="utf-8")
    stated = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^\| `(results\.json|scores\.parquet)` \| (\d+) \|", table, re.M)
    }
    assert {stated["results.json"]} == _code_constants("results.py")
    assert {stated["scores.parquet"]} == _code_constants("scores.py")
    sample = json.loads((ROOT / "docs" / "examples" / "results.json").read_text(encoding="utf-8"))
    assert sample["schema_version"] == stated["results.json"]
    metadata = pq.read_schema(ROOT / "docs" / "examples" / "scores.parquet").metadata
    assert int(metadata[b"mia.scores.schema_version"]) == stated["scores.parquet"]


def test_one_version_everywhere():
    import mia

    project = (
        (ROOT / "pyproject.toml")
        .read_text(encoding="utf-8")
        .split("[project]", 1)[1]
        .split("\n[", 1)[0]
    )
    version = re.search(r'^version\s*=\s*"([^"]+)"', project, re.M).group(1)
    assert mia.__version__ == version
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert str(citation["version"]) == version
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert {"authors", "message", "title"} <= set(citation)
    assert f"## [{version}]" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
