"""The import layering is a contract checked by `nox -s lint` (tools/check_layers.py, import-linter): kept on
the repository as it is, and broken, with the offending import named, by a planted violation."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "tools" / "check_layers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_layering_contracts_are_kept():
    rc, out = _checker().check(ROOT)
    assert rc == 0, out
    assert "2 kept, 0 broken" in out


@pytest.mark.parametrize("module,line,contract", [
    ("quant/arith.py", "from stackcam.sim import csi2  # noqa", "layers"),
    ("rtl/requant.py", "from stackcam.cli import main  # noqa", "layers"),
    ("rtl/requant.py", "from stackcam.quant import compiler  # noqa", "rtl imports only"),
])
def test_a_planted_violation_breaks_the_contract(module, line, contract):
    def plant(pkg):
        path = pkg / module
        path.write_text(path.read_text() + f"\n{line}\n")

    rc, out = _checker().check(ROOT, patch=plant)
    assert rc != 0
    assert "1 broken" in out and f"{contract}" in out and "BROKEN" in out
    dotted = "stackcam." + module[:-3].replace("/", ".")
    assert dotted in out
