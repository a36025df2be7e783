"""The Ray flags' own rules and the replica's OpenVINO settings (no Ray cluster started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vinolm.deploy.ray_serve import check_ray_args, replica_ov_config
from vinolm.errors import InvalidRequest
from vinolm.server.cli import add_ray_args, add_serve_args


def parse(*argv: str):
    import argparse

    p = argparse.ArgumentParser()
    add_serve_args(p)
    add_ray_args(p)
    return p.parse_args(["--replicas", "2", *argv])


@pytest.mark.parametrize(("argv", "message"), [
    (["--replicas", "0"], "--replicas must be >= 1"),
    (["--threads-per-replica", "0"], "--threads-per-replica must be >= 1"),
    (["--min-replicas", "1"], "go together"),
    (["--min-replicas", "3", "--max-replicas", "4"], "1 <= --min-replicas <= --replicas"),
    (["--port", "0"], "--port 0 is not possible"),
    (["--ray-cpus", "4", "--ray-address", "10.0.0.1:6379"], "--ray-cpus sizes a cluster started here"),
    (["--ray-cpus", "3", "--threads-per-replica", "2"], "cannot hold 2 replica(s)"),
])
def test_bad_ray_flags_are_one_line_each(argv: list[str], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_ray_args(parse(*argv))


def test_good_flags_pass() -> None:
    check_ray_args(parse("--ray-cpus", "4", "--min-replicas", "1", "--max-replicas", "3"))


def test_replica_threads_and_no_pinning_unless_the_user_chose() -> None:
    assert replica_ov_config([], 2) == ["INFERENCE_NUM_THREADS=2", "ENABLE_CPU_PINNING=false"]
    assert replica_ov_config(["ENABLE_CPU_PINNING=true"], 1) == ["ENABLE_CPU_PINNING=true", "INFERENCE_NUM_THREADS=1"]


def test_cli_bad_flag_is_one_line_and_exit_2() -> None:
    done = subprocess.run([str(Path(sys.executable).with_name("vinolm")), "serve", "--replicas", "0", "--no-ui"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--replicas must be >= 1" in done.stderr and "Traceback" not in done.stderr
