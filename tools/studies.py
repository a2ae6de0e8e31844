"""`make studies`: the README's list of studies, written from conf/experiment/ between two markers.

Each study is a file conf/experiment/<name>.yaml; its first comment line (after `# @package`) says
what the study asks, and experiments/<name>.md, where there is one, is its page. `--check` writes
nothing and exits with status 1 where the README's list differs from the folder.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- studies: written by `make studies` from conf/experiment/ -->"
END = "<!-- end of studies -->"
# Where-to-read-more pointers and the command itself: the list gives the command and the page.
POINTER = re.compile(r"\s*\((?:docs/|experiments/|§)[^()]*\)")


def names(conf: Path = ROOT / "conf") -> list[str]:
    return sorted(p.stem for p in (conf / "experiment").glob("*.yaml"))


def summary(path: Path) -> str:
    """The study's first comment line, continued while a parenthesis is open, without its pointers
    to the docs or its command."""
    lines = [
        line.lstrip("#").strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("#") and "@package" not in line
    ]
    text = ""
    for line in lines:
        text = f"{text} {line}".strip()
        if text.count("(") <= text.count(")"):
            break
    depth = 0
    for i, c in enumerate(text):  # the summary ends at its first colon outside parentheses
        depth += {"(": 1, ")": -1}.get(c, 0)
        if c == ":" and depth == 0 and text[i + 1 : i + 2] in ("", " "):
            text = text[:i]
            break
    return POINTER.sub("", text).strip()


def page(name: str, root: Path = ROOT) -> str | None:
    """The study's page under experiments/: <name>.md, or the one whose commands run it."""
    own = root / "experiments" / f"{name}.md"
    if own.is_file():
        return f"experiments/{name}.md"
    for p in sorted((root / "experiments").glob("*.md")):
        if p.name != "README.md" and re.search(
            rf"experiment={re.escape(name)}\b", p.read_text(encoding="utf-8")
        ):
            return f"experiments/{p.name}"
    return None


def block(root: Path = ROOT) -> str:
    rows = []
    for name in names(root / "conf"):
        where = page(name, root)
        link = f"[{Path(where).stem}]({where})" if where else ""
        rows.append(
            f"| `{name}` | {summary(root / 'conf' / 'experiment' / f'{name}.yaml')} | {link} |"
        )
    return "\n".join([BEGIN, "| study | what it measures | page |", "|---|---|---|", *rows, END])


def listed(readme_text: str) -> list[str]:
    """The study names in the README's generated list."""
    inside = readme_text.split(BEGIN, 1)[1].split(END, 1)[0] if BEGIN in readme_text else ""
    return re.findall(r"^\| `([^`]+)` \|", inside, re.M)


def write(readme: Path = ROOT / "README.md") -> bool:
    """Rewrite the list in place; True where it changed."""
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"error: {readme} has no studies markers: add {BEGIN} and {END}")
    head, rest = text.split(BEGIN, 1)
    new = head + block(readme.parent) + rest.split(END, 1)[1]
    readme.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        text = (ROOT / "README.md").read_text(encoding="utf-8")
        sys.exit(0 if BEGIN in text and block() in text else 1)
    print("README.md: studies " + ("rewritten" if write() else "unchanged"))
