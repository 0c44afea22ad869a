"""The documentation stays true to the tree and the CLI: every relative link in README.md and
docs/*.md points at something that exists, and every `llpack` command shown in a code block
parses (its subcommand answers `--help`, and each option it uses is one that subcommand has).
"""
from __future__ import annotations

import argparse
import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
OPTION = re.compile(r"^(--[A-Za-z][\w-]*|-[A-Za-z])(?:=.*)?$")


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def relative_links(text: str) -> list[str]:
    """Link and image targets outside code blocks that point into the repository."""
    targets, in_code = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        for target in LINK.findall(line):
            if re.match(r"^(https?://|mailto:)", target, re.I) or target.startswith("#"):
                continue
            targets.append(target.split("#", 1)[0])
    return targets


def code_lines(text: str) -> list[str]:
    """Lines inside fenced code blocks, with backslash continuations joined."""
    lines, in_code, pending = [], False, ""
    for line in text.splitlines():
        if FENCE.match(line):
            in_code, pending = not in_code, ""
            continue
        if not in_code:
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines


def llpack_commands(text: str) -> list[list[str]]:
    """The words of every code line that runs `llpack`, prompt and comments stripped."""
    commands = []
    for line in code_lines(text):
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:].lstrip()
        if not line.startswith("llpack ") and line != "llpack":
            continue
        words = shlex.split(line, comments=True)
        if words and words[0] == "llpack":
            commands.append(words[1:])
    return commands


@functools.lru_cache(maxsize=1)
def sub_subcommands() -> dict[str, tuple[str, ...]]:
    """Subcommands whose first positional argument picks an action (`report show|merge`)."""
    from toolkit.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = {}
    for name, sub in subparsers.choices.items():
        positionals = [a for a in sub._actions if not a.option_strings]
        if positionals and positionals[0].choices and all(isinstance(c, str) for c in positionals[0].choices):
            found[name] = tuple(positionals[0].choices)
    return found


def split_command(words: list[str]) -> tuple[tuple[str, ...], list[str], list[str]]:
    """(subcommand path, the words that belong to it, the words after `--` for `emulate`)."""
    path, rest, inner = [], list(words), []
    while rest and rest[0].startswith("-"):  # global flags before the subcommand
        rest.pop(0)
    if rest:
        path.append(rest.pop(0))
        actions = sub_subcommands().get(path[0], ())
        if actions and rest and rest[0] in actions:
            path.append(rest.pop(0))
    if "--" in rest:
        cut = rest.index("--")
        rest, inner = rest[:cut], rest[cut + 1:]
    return tuple(path), rest, inner


@functools.lru_cache(maxsize=None)
def help_text(path: tuple[str, ...]) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "toolkit.cli", *path, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def command_problems(words: list[str]) -> list[str]:
    path, rest, inner = split_command(words)
    if not path:
        return ["no subcommand"]
    code, text = help_text(path)
    shown = "llpack " + " ".join(path)
    if code != 0:
        return [f"`{shown} --help` exits {code}: {text.strip()[-300:]}"]
    problems = []
    for word in rest:
        match = OPTION.match(word)
        if match and not re.search(r"(?<![\w-])" + re.escape(match.group(1)) + r"(?![\w-])", text):
            problems.append(f"`{shown}` has no option {match.group(1)}")
    if inner:  # `llpack emulate ... -- COMMAND`: the inner command must parse too
        problems += [f"inside `{shown} --`: {p}" for p in command_problems(inner)]
    return problems


def test_docs_exist():
    assert (ROOT / "README.md").is_file()
    assert len(DOCS) > 1, "docs/*.md pages are missing"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_relative_links_point_at_files_that_exist(doc):
    missing = [t for t in relative_links(doc.read_text()) if t and not (doc.parent / t).exists()]
    assert not missing, f"{doc_id(doc)} links to missing paths: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_links_stay_inside_the_repository(doc):
    outside = [t for t in relative_links(doc.read_text())
               if t and ROOT not in [(doc.parent / t).resolve(), *(doc.parent / t).resolve().parents]]
    assert not outside, f"{doc_id(doc)} links outside the repository: {outside}"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_llpack_commands_parse(doc):
    problems = []
    for words in llpack_commands(doc.read_text()):
        problems += [f"llpack {shlex.join(words)}\n    -> {p}" for p in command_problems(words)]
    assert not problems, f"{doc_id(doc)}:\n" + "\n".join(problems)


def test_the_checks_can_fail():
    """The parsers above see links, options and sub-subcommands as the tests need them to."""
    text = "[a](docs/x.md#top) ![b](y.png) [c](https://e.org) [d](#here) `[e](z.md)`\n"
    assert relative_links(text) == ["docs/x.md", "y.png"]
    block = "```bash\n$ llpack report merge a b \\\n    --out m   # note\nllpackx nope\n```\n"
    assert llpack_commands(block) == [["report", "merge", "a", "b", "--out", "m"]]
    assert split_command(["report", "merge", "a", "--out", "m"])[0] == ("report", "merge")
    assert split_command(["enhance", "x.dng", "-o", "y.png"])[0] == ("enhance",)
    assert command_problems(["enhance", "x.dng", "-o", "y.png", "--no-such-option"]) == [
        "`llpack enhance` has no option --no-such-option"]
    assert command_problems(["emulate", "--cpu", "cortex-a72", "--", "profile", "b", "--bogus"]) == [
        "inside `llpack emulate --`: `llpack profile` has no option --bogus"]
    assert command_problems(["no-such-command"])[0].startswith("`llpack no-such-command --help` exits 2")
