"""nox sessions: tests, simulate (the main job), verilog, bench, sweep, build (FPGA board), gatesim (its netlist
against the RTL), lint, reliability, models, fuzz."""

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

PYTHON = None      # the interpreter nox runs under (3.11+)


def _install(session, *extras):
    spec = "." if not extras else f".[{','.join(extras)}]"
    session.install("-e", spec)


@nox.session(python=PYTHON)
def tests(session):
    """The whole pytest suite: unit tests (amaranth.sim), toolchain tests, system tests (cocotb on Verilator)."""
    _install(session, "test")
    workers = os.environ.get("STACKCAM_TEST_WORKERS", "2")
    args = session.posargs or ["-n", workers, "--dist", "loadgroup"]
    session.run("pytest", *args)


@nox.session(python=PYTHON)
def reliability(session):
    """The standing reliability campaign (tools/reliability.py): model-file, ROM-image and input-image fuzzing,
    concurrent compiles on a cold cache, an RTL soak and SRAM fault injection in Verilator;
    build/reliability/report.json and a summary table. Seeds fixed and
    printed; options after --, e.g. `nox -s reliability -- --scale 10 --seed 7` (see `-- --help`)."""
    _install(session, "test")
    session.run("python", "tools/reliability.py", *session.posargs)


@nox.session(python=PYTHON)
def models(session):
    """The published image models of the mediapipe==0.10.14 wheel (downloaded from PyPI once): each compiled for
    imx500, the golden executor against LiteRT BUILTIN_REF on the exported int8 model (bit-exact) and against the
    float model (agreement); a table and build/models/report.json (tools/models.py; options after --)."""
    _install(session, "test")
    session.run("python", "tools/models.py", *session.posargs)


@nox.session(python=PYTHON)
def fuzz(session):
    """Random networks (tools/fuzz.py): each quantized by LiteRT's converter and by our PTQ, compiled for tiny, demo
    and imx500, the golden executor against LiteRT BUILTIN_REF element for element, a few cases per preset also on
    the RTL; build/fuzz/report.json. Options after -- (e.g. `-- --cases 2000 --rtl 100`)."""
    _install(session, "test")
    session.run("python", "tools/fuzz.py", *(session.posargs or ["--cases", "300", "--rtl", "20"]))


@nox.session(python=PYTHON)
def simulate(session):
    """The main job: `stackcam simulate` with any extra arguments passed through."""
    _install(session, "sim")
    session.run("stackcam", "simulate", *session.posargs)


@nox.session(python=PYTHON)
def verilog(session):
    """Write the die's Verilog for every preset into build/verilog/ and lint it with Verilator."""
    _install(session, "sim")
    session.run("stackcam", "verilog", *(session.posargs or ["--config", "all"]))


@nox.session(python=PYTHON)
def bench(session):
    """MobileNet V1 1.0 224 (and 0.25 96, BlazeFace) through the whole die in the RTL at the imx500 preset, and
    Arm's Vela on the same exported int8 model for an Ethos-U85-2048 (the peer column); writes
    build/bench/<name>.json, a per-layer bar chart <name>.png and the exported <name>.tflite with vela.ini."""
    _install(session, "bench")
    session.run("stackcam", "bench", *session.posargs)


@nox.session(python=PYTHON)
def sweep(session):
    """`stackcam sweep` over the default grid (configurations x networks: analytic cycles, energy and area, the RTL
    on the grid's sample points) on a local Ray instance; build/sweep/sweep.csv, sweep.json and pareto.png. Options
    after --, e.g. `nox -s sweep -- --address HOST:PORT` for a cluster."""
    _install(session, "sweep")
    session.run("stackcam", "sweep", *session.posargs)


@nox.session(python=PYTHON)
def build(session):
    """`stackcam build BOARD` (default ulx3s): synthesis, place and route and packing with the yowasp tools; Fmax
    and utilization in build/boards/BOARD/report.json."""
    _install(session, "fpga")
    session.run("stackcam", "build", *(session.posargs or ["ulx3s"]))


@nox.session(python=PYTHON)
def gatesim(session):
    """Gate-level check of the FPGA flow: `stackcam gatesim` (the die's ECP5 netlist from the board build's
    synthesis recipe, simulated in Verilator with the ECP5 cell models, against the RTL: the person detector on the
    fpga preset, same CSI-2 bytes and cycles), then the tests marked slow (tests/test_gatesim.py; its person-detector
    case repeats what the command just showed and is left to `pytest -m slow`). Options after -- go to `stackcam
    gatesim` (e.g. `-- --input frame`)."""
    _install(session, "fpga", "test")
    session.run("stackcam", "gatesim", *session.posargs)
    session.run("pytest", "-m", "slow", "-k", "not person_detector", "tests/test_gatesim.py")


@nox.session(python=PYTHON)
def lint(session):
    """ruff on the whole repository, and the import layering (import-linter contracts in pyproject.toml: the CLI on
    top, then boards, sim, rtl, quant; rtl takes only the format, timing and arithmetic of quant)."""
    session.install("ruff>=0.5", "import-linter>=2.1")
    session.run("ruff", "check", ".")
    session.run("python", "tools/check_layers.py")
