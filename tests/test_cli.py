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


def test_errors_map_to_exit_statuses_in_one_place(monkeypatch, capsys):
    """StackcamError: its own status and message; a missing extra: one line naming the pip extra; anything else
    is a bug: one line naming the exception, exit 1 (never a ValueError passed off as the user's error)."""
    import stackcam.cli.verilog as cmd
    from stackcam.cli import main
    from stackcam.errors import DieError, StackcamError

    def raising(exc):
        def func(args):
            raise exc
        return func

    cases = [(StackcamError("bad input\nsecond line"), 2, "stackcam verilog: error: bad input"),
             (DieError("the die refused the frame"), 3, "stackcam verilog: error: the die refused the frame"),
             (ModuleNotFoundError("no cocotb", name="cocotb"), 2,
              "stackcam verilog: error: this command needs cocotb, which comes with the 'sim' extra: "
              "pip install 'stackcam[sim]'"),
             (ValueError("an internal slip"), 1,
              "stackcam verilog: internal error (a bug in stackcam): ValueError: an internal slip (set "
              "STACKCAM_DEBUG=1 for the traceback)"),
             (ModuleNotFoundError("no x", name="x"), 1,
              "stackcam verilog: internal error (a bug in stackcam): ModuleNotFoundError: no x (set "
              "STACKCAM_DEBUG=1 for the traceback)")]
    for exc, status, line in cases:
        monkeypatch.setattr(cmd, "cmd_verilog", raising(exc))
        assert main(["verilog"]) == status
        assert capsys.readouterr().err == line + "\n"
    monkeypatch.setenv("STACKCAM_DEBUG", "1")
    with pytest.raises(ValueError, match="an internal slip"):
        monkeypatch.setattr(cmd, "cmd_verilog", raising(ValueError("an internal slip")))
        main(["verilog"])
