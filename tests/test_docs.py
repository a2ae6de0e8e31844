"""The documentation is checked like code, in seconds, without training anything (but for the
sample outputs, compared with the session's default job):

- every `python run.py ...` (or `mia ...`) command in a fenced code block of README.md, docs/*.md
  and every page under experiments/ (the committed report folders included) composes with Hydra
  against conf/ (a sweep `a=1,2` is composed at its first value, `-m` dropped, `+experiment=` read
  as run.py reads it, `<placeholders>` kept as strings); every `make <target>` names a Makefile
  target, every `python -m <module>` a module of the repository;
- every relative link and image in those files resolves to a file or folder of the repository;
- every decimal figure of a README paragraph that links an experiments page appears verbatim on that
  page (a paragraph: lines up to a blank line, a list item, a table row or a heading);
- `python run.py --help` starts with mia's own usage; the version is one number everywhere, and the
  CHANGELOG keeps the Keep a Changelog form;
- the README's list of studies and `--help` name the studies of conf/experiment/, and the sample
  outputs in docs/examples/ hold the keys a job writes today.

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

from tools import examples, studies

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def doc_files(root: Path = ROOT) -> list[Path]:
    """The user-facing markdown: the README, docs/, and every page under experiments/, the committed
    report folders (experiments/figures/**) included."""
    files = [
        root / "README.md",
        *sorted((root / "docs").glob("*.md")),
        *sorted((root / "experiments").rglob("*.md")),
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
    """The arguments of `[ENV=...] python run.py ARGS` (or of the same command as `mia ARGS` or
    `python -m mia ARGS`), or None for any other command."""
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    if len(words) >= 2 and _is_python(words[0]) and Path(words[1]).name == "run.py":
        return words[2:]
    if words and words[0] == "mia":
        return words[1:]
    if len(words) >= 3 and _is_python(words[0]) and words[1:3] == ["-m", "mia"]:
        return words[3:]
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
    assert run_py_arguments(["mia", "debug=small"]) == ["debug=small"]
    assert run_py_arguments([".venv/bin/python", "-m", "mia", "-m", "a=1,2"]) == ["-m", "a=1,2"]
    assert run_py_arguments(["python", "-m", "mia.report", "x"]) is None
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
    report = tmp_path / "experiments" / "figures" / "study" / "report.md"
    report.parent.mkdir(parents=True)
    (report.parent / "gap_vs_N.png").write_bytes(b"")
    report.write_text("## Plots\n\n![gap_vs_N](gap_vs_N.png)\n![roc](roc_N1000_T40_iid.png)\n")
    assert report in doc_files(tmp_path)
    links = check_links(doc_files(tmp_path), root=tmp_path)
    assert len(links) == 2, _report(links)
    assert "experiments/figures/study/report.md:4: roc_N1000_T40_iid.png does not exist" in links
    figures_ = check_figures(readme, root=tmp_path)
    assert len(figures_) == 1 and "0.777 is not on experiments/study.md" in figures_[0], _report(
        figures_
    )


@pytest.fixture(scope="module")
def help_text() -> str:
    out = subprocess.run(
        [sys.executable, "run.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_help_starts_with_mias_own_usage(help_text):
    lines = [line for line in help_text.splitlines() if line.strip()]
    assert lines[0].startswith("mia: membership inference attacks on CLIP"), help_text[:500]
    for section in (
        "Usage: mia [-m]",
        "== Examples ==",
        "python run.py experiment=gap_scaling",
        "== Flags ==",
        "--multirun,-m",
    ):
        assert section in help_text
    assert help_text.index("== Examples ==") < help_text.index("== Flags ==")


# --- the list of studies -------------------------------------------------------------------------


def test_readme_lists_every_study_as_conf_experiment_holds_them():
    """README's list is the one `make studies` writes from conf/experiment/, and names every
    study."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert studies.listed(readme) == studies.names(), "run `make studies`"
    assert studies.block() in readme, "run `make studies`"


def test_help_lists_every_study(help_text):
    (line,) = [x for x in help_text.splitlines() if x.startswith("experiment: ")]
    assert line.removeprefix("experiment: ").split(", ") == studies.names()


def test_studies_list_is_rewritten_between_its_markers(tmp_path):
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "conf" / "experiment" / "alpha.yaml").write_text(
        "# @package _global_\n"
        "# The gap against N (docs/design.md §6): python run.py experiment=alpha\n"
    )
    (tmp_path / "conf" / "experiment" / "beta.yaml").write_text(
        "# @package _global_\n# Does it leak? A question\n# (docs/design.md\n# §7): more\n"
    )
    (tmp_path / "experiments" / "alpha.md").write_text("# alpha\n")
    (tmp_path / "experiments" / "other.md").write_text("python run.py experiment=beta\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{studies.BEGIN}\n| `old` | gone | |\n{studies.END}\n\nafter\n")
    assert studies.write(readme)
    text = readme.read_text()
    assert studies.listed(text) == ["alpha", "beta"] and text.endswith("\n\nafter\n")
    assert "| `alpha` | The gap against N | [alpha](experiments/alpha.md) |" in text
    assert "| `beta` | Does it leak? A question | [other](experiments/other.md) |" in text
    assert not studies.write(readme)  # a second run changes nothing


# --- the sample outputs --------------------------------------------------------------------------


def key_paths(value, prefix: str = "") -> set[str]:
    """Every key of a JSON record as a dotted path; a list's elements under `[]`."""
    if isinstance(value, dict):
        out = set()
        for k, v in value.items():
            out |= {f"{prefix}{k}"} | key_paths(v, f"{prefix}{k}.")
        return out
    if isinstance(value, list):
        return set().union(*(key_paths(v, f"{prefix}[].") for v in value))
    return set()


def test_examples_paths_are_made_relative():
    record = {"a": "/r/x/y", "b": ["/r", "/rx"], "c": {"d": 1}}
    assert examples.relative(record, "/r") == {"a": "x/y", "b": [".", "/rx"], "c": {"d": 1}}


@pytest.mark.slow
def test_sample_results_have_the_keys_a_job_writes_today(default_job):
    """docs/examples/ holds what a job writes today: the same keys in results.json, the same columns
    in scores.parquet, as a fresh debug=small job (`make examples` rewrites the samples)."""
    import json

    import pyarrow.parquet as pq

    _, path = default_job
    fresh = json.loads(Path(path).read_text(encoding="utf-8"))
    sample = json.loads((ROOT / "docs" / "examples" / "results.json").read_text(encoding="utf-8"))
    missing, extra = key_paths(fresh) - key_paths(sample), key_paths(sample) - key_paths(fresh)
    assert not missing and not extra, f"run `make examples`: missing {missing}, stale {extra}"
    fresh_columns = pq.read_schema(Path(path).parent / fresh["scores"]).names
    assert pq.read_schema(ROOT / "docs" / "examples" / "scores.parquet").names == fresh_columns


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
    """mia.__version__ is the one place the version is written: pyproject.toml reads it (setuptools'
    dynamic version), CITATION.cff repeats it, and the CHANGELOG has its release section."""
    import mia

    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mia.__version__"}
    version = mia.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert str(citation["version"]) == version
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert {"authors", "message", "title"} <= set(citation)
    assert re.search(
        rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", _changelog(), re.M
    )


def _changelog() -> str:
    return (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


KEEP_A_CHANGELOG = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_changelog_in_keep_a_changelog_form():
    """[Unreleased] first, then one section per release, newest first, each with a link reference;
    within a release, each kind of change (Added, Changed, ...) at most once."""
    releases = re.findall(r"^## \[([^\]]+)\](.*)$", _changelog(), re.M)
    names = [name for name, _ in releases]
    assert names[0] == "Unreleased" and len(set(names)) == len(names), names
    dated = [tuple(map(int, n.split("."))) for n in names[1:]]
    assert dated == sorted(dated, reverse=True), names
    assert all(re.fullmatch(r" - \d{4}-\d{2}-\d{2}", rest) for _, rest in releases[1:]), releases
    for name in names:
        assert re.search(rf"^\[{re.escape(name)}\]: \S+$", _changelog(), re.M), name
    for section in re.split(r"^## ", _changelog(), flags=re.M)[1:]:
        kinds = re.findall(r"^### (.+)$", section, re.M)
        assert len(kinds) == len(set(kinds)) and set(kinds) <= KEEP_A_CHANGELOG, (
            section[:40],
            kinds,
        )


def test_citation_abstract_says_what_the_findings_say():
    """T/N does not predict the gap (README, Findings): no one curve of T/N, and no bound claimed
    without its constant."""
    abstract = " ".join(
        yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))["abstract"].split()
    )
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "the gap follows no single T/N law" in readme
    assert "like T/N" not in abstract and "T/N (T the epochs) does not predict it" in abstract
    assert "bounds it from above" not in abstract


def test_readme_is_short_enough_to_read():
    """The README speaks to users; maintainer material lives in docs/development.md."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: move detail into docs/"
