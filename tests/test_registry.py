"""The one model registry: a zoo name is the same network (shapes, weights, quantization) in every command, and
its cache holds data (a .tflite), keyed by what produced it."""

import numpy as np
import pytest

import stackcam.cli.models as registry
from stackcam.cli import main
from stackcam.rtl.params import preset

ZOO = ["zoo:blazeface", "zoo:mobilenet_v1_0.25_96_2", "zoo:mobilenet_v1_0.25_128_10", "first-light"]


class _Stop(Exception):
    pass


def _signature(graph):
    """Every tensor's shape, dtype, quantization and constant data, and every operator: the network itself."""
    tensors = {}
    for name, t in graph.tensors.items():
        q = None if t.quant is None else (np.asarray(t.quant.scale, np.float64).tobytes(),
                                          np.asarray(t.quant.zero_point, np.int64).tobytes())
        data = None if t.data is None else np.ascontiguousarray(t.data).tobytes()
        tensors[name] = (tuple(int(d) for d in t.shape), str(t.dtype), q, data)
    ops = [(op.kind, tuple(op.inputs), tuple(op.outputs), repr(sorted(op.opts.items()))) for op in graph.ops]
    return tensors, ops


@pytest.mark.parametrize("name", ZOO)
def test_a_zoo_name_is_the_same_network_in_every_command(name, tmp_path, monkeypatch):
    """compile, run, simulate, build and host each resolve MODEL through the registry; each gets the same graph."""
    import stackcam.boards.build as boards_build
    import stackcam.boards.host as boards_host
    import stackcam.sim.simulate as sim_simulate
    from stackcam.boards.host import BoardError

    seen = {}
    real = registry.model_graph

    def recording(model, config=None, *args, **kwargs):
        graph = real(model, config, *args, **kwargs)
        seen.setdefault(current[0], []).append((model, _signature(graph)))
        return graph

    current = [None]
    monkeypatch.setattr(registry, "model_graph", recording)

    def fake_simulate(config, prepared, **kwargs):
        return 0, {}

    monkeypatch.setattr(sim_simulate, "simulate", fake_simulate)

    def no_board(*args, **kwargs):
        raise BoardError("no board in this test")

    monkeypatch.setattr(boards_host, "SimulatedBoard", no_board)
    spec = boards_build.BOARDS["ulx3s"]

    class Unbuildable(type(spec)):
        def platform(self):
            raise _Stop("the model check is all this test needs")

    monkeypatch.setitem(boards_build.BOARDS, "ulx3s", Unbuildable(**spec.__dict__))
    monkeypatch.setattr(boards_build, "find_tools", lambda: {})

    config = "demo"
    h, w, c = registry.prepare_model(name, preset(config)).io["input"]["hwc"]
    np.save(tmp_path / "x.npy", np.zeros((h, w, c), np.int8))
    commands = {
        "compile": ["compile", name, "--config", config, "-o", str(tmp_path / "c")],
        "run": ["run", name, "--config", config, "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "r.npz")],
        "simulate": ["simulate", "--model", name, "--config", config],
        "build": ["build", "ulx3s", "--config", config, "--model", name, "-o", str(tmp_path / "b")],
        "host": ["host", "--sim", "--tensor", "--model", name, "--config", config],
    }
    for command, argv in commands.items():
        current[0] = command
        try:
            main(argv)
        except _Stop:
            pass
    seen.pop(None)                  # the input shape, asked above
    assert set(seen) == set(commands), seen.keys()
    reference = seen["compile"][0][1]
    for command, records in seen.items():
        for model, signature in records:
            assert model == name
            assert signature == reference, f"{command} resolved {name} to a different network"


def test_the_cache_is_data_keyed_by_what_made_it(tmp_path, monkeypatch):
    """The cache holds a .tflite (no pickle); a seed or a toolchain source change is a different key; a damaged
    cache file is made again, not trusted."""
    monkeypatch.setenv("STACKCAM_CACHE", str(tmp_path))
    name = "zoo:mobilenet_v1_0.25_96_2"
    g1 = registry.model_graph(name)
    files = sorted((tmp_path / "models").iterdir())
    assert len(files) == 1 and files[0].suffix == ".tflite" and files[0].read_bytes()[4:8] == b"TFL3"
    assert registry.cache_key(name, seed=1) != registry.cache_key(name, seed=0)
    monkeypatch.setattr(registry, "_toolchain_digest", lambda: "another toolchain")
    assert registry.cache_key(name) != files[0].stem and not files[0].stem.startswith(registry.cache_key(name)[:32])
    monkeypatch.undo()
    monkeypatch.setenv("STACKCAM_CACHE", str(tmp_path))
    files[0].write_bytes(b"TFL3 damaged")
    g2 = registry.model_graph(name)
    assert _signature(g2) == _signature(g1)
    assert files[0].read_bytes()[4:8] == b"TFL3" and len(files[0].read_bytes()) > 1000
