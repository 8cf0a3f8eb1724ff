"""Check the import layering of the `stackcam` packages with import-linter (contracts in pyproject.toml).

The import packages are mapped onto top-level folders (stackcam.rtl is rtl/, ...), which import-linter's module
discovery does not follow; so the sources are copied into one `stackcam/` tree in a temporary folder and
import-linter runs on that copy. Usage: python tools/check_layers.py [REPO]; exit status 0 when every contract
is kept. `check(repo, patch=None)` lets a test plant a violation in the copy.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MAPPED = {"rtl": "rtl", "quant": "quant", "sim": "sim", "boards": "boards"}


def assemble(repo, dest):
    """Copy the sources of every stackcam package into dest/stackcam/ as one ordinary package tree."""
    repo = Path(repo)
    pkg = Path(dest) / "stackcam"
    shutil.copytree(repo / "stackcam", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name, folder in MAPPED.items():
        shutil.copytree(repo / folder, pkg / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.v"))
    return pkg


def check(repo, patch=None):
    """(exit status, output) of lint-imports on a copy of `repo`; `patch(pkg_dir)` may edit the copy first."""
    repo = Path(repo).resolve()
    with tempfile.TemporaryDirectory(prefix="stackcam-layers-") as tmp:
        pkg = assemble(repo, tmp)
        if patch is not None:
            patch(pkg)
        shutil.copy(repo / "pyproject.toml", Path(tmp) / "pyproject.toml")
        env = dict(os.environ, PYTHONPATH=tmp)
        exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
        proc = subprocess.run([exe, "--no-cache"], cwd=tmp, env=env, capture_output=True, text=True)
        return proc.returncode, proc.stdout + proc.stderr


if __name__ == "__main__":
    rc, out = check(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    print(out)
    sys.exit(rc)
