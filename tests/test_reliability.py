"""`nox -s reliability` (tools/reliability.py) at tiny counts: it runs every campaign, writes its report with the
documented schema, finds no bug, crash, hang or wrong result, no frame of the RTL soak that is not bit-exact and no
silent SRAM fault, prints its seed and how to replay a case."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "reliability.py"


def test_campaign_smoke(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--seed", "3", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "seed 3" in r.stdout and "--replay CAMPAIGN:CASE" in r.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert not [p for p in tmp_path.iterdir() if p.name != "report.json"]         # written atomically
    assert report["version"] == 1 and report["seed"] == 3 and report["ok"] is True
    assert set(report["campaigns"]) == {"model", "rom", "image", "concurrency", "soak", "faults"}
    outcomes = {"accepted", "refused", "bug", "crash", "hang", "wrong"}
    for name in ("model", "rom", "image"):
        c = report["campaigns"][name]
        assert set(c["outcomes"]) == outcomes and sum(c["outcomes"].values()) == c["cases"] > 0
        assert c["failures"] == [] and c["failure_count"] == 0
        assert c["outcomes"]["refused"] > 0 and c["outcomes"]["accepted"] > 0
    conc = report["campaigns"]["concurrency"]
    assert conc["runs"] == 4 and conc["outcomes"] == {"ok": 2, "failed": 0}
    assert all(r["identical"] and not r["errors"] and not r["leftovers"] for r in conc["rounds"])
    soak = report["campaigns"]["soak"]
    assert soak["ok"] and soak["frames"] == soak["frames_received"] == 10 and soak["model_loads"] >= 1
    assert soak["bit_exact"] == soak["clean_frames"] == 9 and soak["bytes_unaccounted"] == 0
    assert not any(soak["csi2_errors"].values()) and soak["faults"]["injected"] == 1
    faults = report["campaigns"]["faults"]
    assert faults["injected"] == faults["frames"] == 10 and faults["silent"] == 0 and faults["corrected"] == 0
    assert faults["detected"] + faults["masked"] == 10
    totals = report["totals"]
    assert totals["cases"] == sum(report["campaigns"][n]["cases"] for n in ("model", "rom", "image"))
    assert all(totals[o] == 0 for o in ("bug", "crash", "hang", "wrong"))
    assert totals["faults_injected"] == 11 and totals["faults_silent"] == 0
    assert "campaign" in r.stdout and "accepted" in r.stdout          # the summary table
    assert "soak: 10 frames" in r.stdout and "SRAM faults: 10 single-bit flips" in r.stdout


def test_replay_one_case():
    r = subprocess.run([sys.executable, str(SCRIPT), "--seed", "3", "--replay", "rom:5"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rom case 5 (seed 3):" in r.stdout
    assert r.stdout.strip().splitlines()[-1].split(":")[0] in ("accepted", "refused")
