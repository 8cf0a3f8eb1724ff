"""The `stackcam` command line: help, Verilog export with lint, and one-line errors on bad input."""

import subprocess
import sys

import pytest

from stackcam.rtl.params import PRESETS


def stackcam(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "stackcam.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("sub", [[], ["simulate"], ["verilog"]])
def test_help(sub):
    r = stackcam(*sub, "--help")
    assert r.returncode == 0 and "usage: stackcam" in r.stdout


def test_missing_image_is_one_line_error(tmp_path):
    r = stackcam("simulate", "--image", str(tmp_path / "nope.png"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.png" in lines[0] and "Traceback" not in r.stderr


def test_unreadable_image_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not an image")
    r = stackcam("simulate", "--image", str(bad))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.jpg" in lines[0] and "Traceback" not in r.stderr


def test_unknown_config_is_one_line_error():
    r = stackcam("simulate", "--config", "huge")
    assert r.returncode == 2 and "unknown configuration 'huge'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", list(PRESETS))
def test_verilog_converts_and_lints(name, tmp_path):
    r = stackcam("verilog", "--config", name, "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    text = (tmp_path / f"stackcam_die_{name}.v").read_text()
    assert "module stackcam_die(" in text
    assert "Verilator lint passed" in r.stdout
