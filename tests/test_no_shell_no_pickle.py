"""Nothing runs a shell with user-controlled strings; no pickle is ever loaded from an artifact or a bundle.

Every Python file of toolkit/, targets/ and quantization/ is parsed and searched for: `shell=True`
(any call), `os.system`, `os.popen`, `pickle.load`/`loads`/`Unpickler`, `allow_pickle=True`, and
`torch.load(` without `weights_only=True`. Parsing (not a text grep) finds them however the call
is spread over lines, and does not trip over the words in comments or docstrings.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("toolkit", "targets", "quantization")


def _name(node: ast.AST) -> str:
    """Dotted name of a call's function: 'os.system', 'torch.load', 'subprocess.run', 'load'."""
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return "?"


def _is_true(node: ast.AST | None) -> bool:
    """True for anything but a literal False/None: a variable passed as shell= or allow_pickle= counts."""
    return not (isinstance(node, ast.Constant) and node.value in (False, None, 0))


def findings(source: str, filename: str = "<source>") -> list[str]:
    """Each unsafe call in `source` as 'file:line: what'."""
    found = []
    aliases = {}  # 'from pickle import load as l' -> {'l': 'pickle.load'}; 'import pickle as p' -> {'p': 'pickle'}
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        head, _, rest = name.partition(".")
        name = f"{aliases[head]}.{rest}" if rest and head in aliases else aliases.get(name, name)
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        where = f"{filename}:{node.lineno}"
        if "shell" in keywords and _is_true(keywords["shell"]):
            found.append(f"{where}: {name}(shell=True)")
        if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
            found.append(f"{where}: {name}() runs a shell")
        if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "cPickle.loads",
                    "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads", "joblib.load"):
            found.append(f"{where}: {name}() unpickles")
        if "allow_pickle" in keywords and _is_true(keywords["allow_pickle"]):
            found.append(f"{where}: {name}(allow_pickle=True)")
        if name == "torch.load" or name.endswith(".torch.load"):
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
    return found


def test_the_checker_finds_what_it_looks_for():
    bad = '''
import os, pickle, subprocess, torch
import numpy as np
from pickle import loads as undo
subprocess.run("ls " + name, shell=True)
subprocess.Popen(cmd,
                 shell=flag)
os.system("rm -rf " + path)
pickle.load(fh)
undo(blob)
np.load(path, allow_pickle=True)
torch.load(path)
torch.load(path, map_location="cpu",
           weights_only=False)
'''
    assert len(findings(bad)) == 8, findings(bad)
    good = '''
"""Never uses shell=True or pickle.load."""  # words in text are fine
import subprocess, torch, numpy as np
subprocess.run(["llpack", "--help"], check=True)  # a list, no shell
np.load(path, allow_pickle=False)
torch.load(path, map_location="cpu",
           weights_only=True)
'''
    assert findings(good) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_shell_and_no_pickle_in_the_source(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    found = [f for path in files for f in findings(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert found == [], "unsafe calls:\n" + "\n".join(found)
