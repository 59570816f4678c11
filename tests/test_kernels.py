"""TensorFlow runs oneDNN's kernels under streamd on every x86 CPU, not only where TensorFlow turns them
on by itself (AVX-512 VNNI and newer): the fused graphs and every capacity figure assume them. A value
the operator put in the environment still wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import streamd, logging\n"
    "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
    "from streamd.networks.savedmodel import log_kernels\n"
    "from tensorflow.python.util import _pywrap_util_port\n"
    "log_kernels()\n"
    "print('onednn', _pywrap_util_port.IsMklEnabled())\n"
)


@pytest.mark.parametrize(
    ("value", "onednn", "logged"),
    [
        (None, True, "TensorFlow runs oneDNN CPU kernels (TF_ENABLE_ONEDNN_OPTS=1)"),
        ("0", False, "TensorFlow runs Eigen CPU kernels (TF_ENABLE_ONEDNN_OPTS=0)"),
    ],
)
def test_onednn_is_on_unless_the_environment_says_otherwise(
    value: str | None, onednn: bool, logged: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = value
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert f"onednn {onednn}" in done.stdout.splitlines(), done.stdout
    assert logged in done.stderr.splitlines(), done.stderr
