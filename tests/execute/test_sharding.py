"""Multi-device tests: run tests/execute/multidevice in a subprocess with 4 simulated CPU devices.

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX starts, so the sharded tests
need a fresh interpreter. The single-device parts of sharding.py are tested here directly.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from conftest import FAST_COMPILE

from jacket.execute.sharding import make_mesh, pad_rows

HERE = Path(__file__).parent


# two halves: the sharded Jacobians in the default run, the data-parallel rest (16 s) in the slow one
@pytest.mark.parametrize("part, at_least", [("sharded_jacobian", 18),
                                            pytest.param("not sharded_jacobian", 8, marks=pytest.mark.slow)])
def test_multidevice_suite_passes_on_four_simulated_devices(part, at_least):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {FAST_COMPILE}", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "-k", part,
                             str(HERE / "multidevice")], env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) >= at_least, output[-2000:]
    assert "skipped" not in output, output[-2000:]


def test_make_mesh_rejects_too_many_devices():
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
        make_mesh(jax.device_count() + 1)


def test_pad_rows():
    import jax.numpy as jnp
    a = jnp.ones((5, 2))
    assert pad_rows(a, 4).shape == (8, 2) and float(pad_rows(a, 4)[5:].sum()) == 0
    assert pad_rows(a, 5) is a
