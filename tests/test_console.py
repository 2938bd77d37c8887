"""A healthy CPU run's console is quiet and honest: no kineto ERROR/USDT lines from the torch profiler,
no third-party deprecation notices or advertisements; a warning that remains is dogbreed's own."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

NOISE = re.compile(
    r"USDT:|ERROR:\d|gpuGetDeviceCount|DeprecationWarning|FutureWarning|is deprecated|💡 Tip|Traceback"
)


@pytest.mark.slow  # a whole run in a subprocess (or several): the slow lane runs it
def test_a_demo_like_run_prints_nothing_alarming(synthetic_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "KINETO_LOG_LEVEL")}
    args = [
        f"data.root={synthetic_root}",
        "data.num_workers=0",
        "model=mobilenet_v2",
        "model.allow_random_init=true",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "callbacks.profiler.framework_profile.start_step=1",  # torch.profiler runs (its C++ log is the noise)
        "callbacks.profiler.framework_profile.num_steps=1",
        f"paths.output_dir={tmp_path / 'run'}",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "dogbreed.train", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    console = result.stdout + result.stderr
    assert result.returncode == 0, console
    assert (tmp_path / "run" / "reports" / "torch_trace.json").is_file()  # the profiler did run
    assert (tmp_path / "run" / "model" / "model.pt").is_file()  # so did the TorchScript export
    assert not NOISE.findall(console), [line for line in console.splitlines() if NOISE.search(line)]
    warnings = [line for line in console.splitlines() if re.search(r"warn", line, re.I)]
    assert all("[dogbreed" in line for line in warnings), warnings
