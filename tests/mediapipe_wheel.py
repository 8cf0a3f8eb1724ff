"""The mediapipe==0.10.14 wheel the published-model tests read: fetched from PyPI once into the cache
(quant.zoo.blazeface.fetch_wheel, as `nox -s models` and the BlazeFace tests get it). A failed download fails the
test; only a machine with no route to PyPI at all skips it, as the BlazeFace tests do."""

import pytest

from stackcam.quant.zoo import blazeface as bf


def mediapipe_wheel():
    try:
        return bf.fetch_wheel()
    except bf.FetchError as exc:
        if not bf.pypi_reachable():
            pytest.skip(f"PyPI is unreachable, so the mediapipe wheel cannot be fetched: {exc}")
        raise
