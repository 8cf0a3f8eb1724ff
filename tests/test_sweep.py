"""`stackcam sweep` (sim.sweep): grid points, the analytic figures of each point against the models run
directly, failures reported and retried but never dropped, and the same sweep on a two-worker Ray cluster
started here on the loopback address giving the same rows as the run in this process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackcam.quant.timing import program_cycles
from stackcam.sim.sweep import GRIDS, SweepError, grid_points, point_config, run_points
from tests.dieutil import Model

STACKCAM = str(Path(sys.executable).with_name("stackcam"))
COMPARED = ("id", "network", "array_rows", "array_cols", "sram_banks", "clock_mhz", "im2col_pixels", "status",
            "cycles", "ms", "macs", "energy_mj", "tops_per_w", "area_mm2", "error")


def test_grid_points_and_bad_grids(tmp_path):
    pts = grid_points("tiny")
    fam = GRIDS["tiny"][0]
    assert len(pts) == len(fam["array"]) * len(fam["clock_mhz"]) * len(fam["networks"])
    assert [p.id for p in pts] == list(range(len(pts)))
    cfg = point_config(pts[-1])
    assert (cfg.array_rows, cfg.array_cols, cfg.clock_mhz) == (4, 8, 200.0)
    # The default grid's RTL sample: each filter picks exactly one point.
    default = grid_points("default")
    assert sum(p.rtl for p in default) == len(GRIDS["default"][1]["rtl"])
    with pytest.raises(SweepError, match="unknown grid 'nope'"):
        grid_points("nope")
    bad = tmp_path / "g.json"
    bad.write_text("{not json")
    with pytest.raises(SweepError, match="not readable JSON"):
        grid_points(str(bad))
    bad.write_text(json.dumps([{"base": "tiny", "array": [[4, 4]], "sram": [], "clock_mhz": [100],
                                "im2col_pixels": [1], "networks": ["zoo:first-light"]}]))
    with pytest.raises(SweepError, match="no values for 'sram'"):
        grid_points(str(bad))


def test_failed_points_are_retried_and_kept():
    pts = grid_points("tiny")[:3]
    calls = {}
    log = []

    def task(p):
        calls[p.id] = calls.get(p.id, 0) + 1
        if p.id == 1 or (p.id == 2 and calls[p.id] == 1):
            raise RuntimeError(f"boom {p.id}")
        return {"id": p.id, "status": "ok", "network": p.network}

    rows = run_points(pts, task, backend="serial", retries=2, log=log.append)
    assert [r["id"] for r in rows] == [0, 1, 2]
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[1]["attempts"] == 3 and "boom 1" in rows[1]["error"]
    assert rows[2]["attempts"] == 2 and calls == {0: 1, 1: 3, 2: 2}
    assert any("point 2" in s and "retrying" in s for s in log)
    assert any("point 1" in s and "FAILED after 3 attempts" in s for s in log)


def _sweep(args, out, env=None, timeout=600):
    r = subprocess.run([STACKCAM, "sweep", "--grid", "tiny", "--node", "22nm", "-o", str(out), *args],
                       capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "sweep.json").read_text()), r.stderr


def test_serial_sweep_equals_the_models(tmp_path):
    data, err = _sweep(["--serial"], tmp_path / "s")
    rows = data["points"]
    assert len(rows) == len(grid_points("tiny")) and all(r["status"] == "ok" for r in rows)
    for r, p in zip(rows, grid_points("tiny")):
        cfg = point_config(p)
        compiled = Model(p.network, cfg).prepared.compiled
        assert r["cycles"] == program_cycles(cfg, compiled.descriptors)["total"]
        assert r["ms"] == pytest.approx(r["cycles"] / (p.clock_mhz * 1e3))
        assert r["energy_mj"] > 0 and r["area_mm2"] > 0
    # The clock changes the time, not the cycles; a wider array changes the cycles.
    assert rows[0]["cycles"] == rows[1]["cycles"] and rows[0]["ms"] == pytest.approx(2 * rows[1]["ms"])
    assert (tmp_path / "s" / "sweep.csv").read_text().count("\n") == len(rows) + 1
    assert (tmp_path / "s" / "pareto.png").stat().st_size > 1000
    assert "sweep: 4/4 points" in err


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.xdist_group("ray")
def test_two_worker_ray_cluster_gives_the_same_rows(tmp_path):
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        pytest.skip("ray is not installed (the 'sweep' extra)")
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled")
    port = _free_port()
    head = subprocess.Popen([str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        serial, _ = _sweep(["--serial"], tmp_path / "serial", env=env)
        deadline = time.time() + 60
        while True:         # the head is up once a driver can connect; the sweep itself retries nothing here
            try:
                cluster, err = _sweep(["--address", f"127.0.0.1:{port}"], tmp_path / "ray", env=env)
                break
            except AssertionError:
                if time.time() > deadline or head.poll() is not None:
                    raise
                time.sleep(3)
        assert "Ray at 127.0.0.1" in err
        assert [{k: r.get(k) for k in COMPARED} for r in cluster["points"]] == \
            [{k: r.get(k) for k in COMPARED} for r in serial["points"]]
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)
