"""Issue 15's fault test: ``vinolm serve --replicas 2`` on Ray (4 logical CPUs, 1 thread per
replica, default model) loses a replica to SIGKILL under load and is redeployed 2 -> 1.

What it shows: under 40 streamed OpenAI requests plus gRPC ModelStreamInfer streams, every
request ends within a time-out, either whole or visibly broken (an HTTP error, a stream cut
before ``[DONE]``, a gRPC error) — nothing hangs; vinolm's retrying client gets all 40 answers
through a second kill; Ray brings back 2 running replicas and later traffic reaches both
(``x-vinolm-replica``); redeploying the app with ``--replicas 1`` settings
(``vinolm.deploy.ray_serve.application`` + ``serve.run`` by name) under load loses nothing
without retries. At the end the Ray cluster's processes are gone, even when the test fails.

Autoscaling: started at 1 replica with ``--min-replicas 1 --max-replicas 2``, sustained load
(more streams than one replica's batch) makes Ray start the second replica, which then answers,
and nothing is lost on the way.

And session affinity: every turn of a conversation sent with ``x-session-id`` (the openai SDK's
``default_headers``) is answered by the replica that ``vinolm.deploy.affinity`` predicts for it,
while the conversations, and requests without the header, reach both replicas.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import httpx
import psutil
import pytest
from tests.e2e.conftest import RunningServer, free_port, start_server

from vinolm.client import openai_client
from vinolm.client.common import SESSION_HEADER, RetryPolicy, Target
from vinolm.deploy.affinity import preferred
from vinolm.deploy.ray_serve import APP_NAME, RAY_CLUSTER_PREFIX, REPLICA_HEADER
from vinolm.server.grpc._proto import grpc_predict_v2_pb2 as pb
from vinolm.server.grpc._proto import grpc_predict_v2_pb2_grpc as pb_grpc
from vinolm.server.kserve.tensors import pack_bytes

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m"
MAX_TOKENS = 32
REQUESTS = 40
GRPC_STREAMS = 3
REQUEST_TIMEOUT = 60.0  # one request, whole or broken
RESTORE_TIMEOUT = 60.0  # Ray noticing a dead replica and starting a new one
REPLICA_CMDLINE = "ServeReplica:vinolm:VinolmReplica"
SERVE_FLAGS = ["--replicas", "2", "--ray-cpus", "4", "--threads-per-replica", "1", "--no-ui",
               "--max-concurrency", "8", "--max-queue", "64", "--drain-timeout", "30"]


@dataclass(frozen=True)
class CountedRetries(RetryPolicy):
    """The client's policy, noting each retry (a retry asks for its delay first)."""

    retries: list[int] = field(default_factory=list)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        self.retries.append(attempt)
        return super().delay(attempt, retry_after)


@dataclass
class Outcome:
    """One request's end: ``whole`` with its text, or the visible failure."""

    whole: bool
    detail: str
    replica: str = ""


def openai_stream(base_url: str, prompt: str) -> Outcome:
    """A streamed chat completion without retries: whole only with ``[DONE]`` after text."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS,
            "stream": True, "temperature": 0}
    text, done, replica = "", False, ""
    try:
        with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body,
                          timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=10)) as response:
            replica = response.headers.get(REPLICA_HEADER, "")
            if response.status_code != 200:
                return Outcome(False, f"HTTP {response.status_code}: {response.read()[:80]!r}", replica)
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data:"):
                    event = json.loads(line.removeprefix("data:"))
                    text += "".join((c.get("delta") or {}).get("content") or "" for c in event.get("choices", []))
    except httpx.TransportError as exc:
        return Outcome(False, f"{type(exc).__name__} after {len(text)} chars", replica)
    return Outcome(done and bool(text), text if done else f"no [DONE] after {len(text)} chars", replica)


def grpc_stream(target: str, prompt: str) -> Outcome:
    """One ModelStreamInfer request through Ray's gRPC proxy, read to its end signal."""
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="pre_prompt", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(pack_bytes([prompt.encode()]))
    request.parameters["max_tokens"].int64_param = MAX_TOKENS
    pieces = 0
    with grpc.insecure_channel(target) as channel:
        call = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(
            iter([request]), metadata=[("application", APP_NAME)], timeout=REQUEST_TIMEOUT)
        try:
            for message in call:
                if message.error_message:
                    return Outcome(False, f"error_message: {message.error_message}")
                names = {tensor.name for tensor in message.infer_response.outputs}
                if "end_signal" in names:
                    call.cancel()
                    return Outcome(pieces > 0, f"{pieces} partial responses")
                pieces += "completion" in names
        except grpc.RpcError as exc:
            return Outcome(False, f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
    return Outcome(False, f"the stream ended without its end signal after {pieces} responses")


def replica_processes(server: RunningServer) -> list[psutil.Process]:
    return [child for child in psutil.Process(server.process.pid).children(recursive=True)
            if _cmdline_has(child, REPLICA_CMDLINE)]


def _cpu_percent(process: psutil.Process) -> float:
    with contextlib.suppress(psutil.Error):
        return process.cpu_percent(interval=0.3)
    return 0.0


def _cmdline_has(process: psutil.Process, needle: str) -> bool:
    with contextlib.suppress(psutil.Error):
        return needle in " ".join(process.cmdline())
    return False


def running_replicas(server: RunningServer) -> int:
    return len(replica_processes(server))


def wait_for_replicas(server: RunningServer, count: int, timeout: float = RESTORE_TIMEOUT) -> set[str]:
    """Until ``count`` replica processes run and requests reach ``count`` distinct replicas."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        if running_replicas(server) == count:
            seen |= {httpx.get(f"{server.base_url}/v1/models", timeout=10).headers.get(REPLICA_HEADER, "")
                     for _ in range(4 * count)}
            seen.discard("")
            if len(seen) >= count:
                return seen
        time.sleep(0.5)
    pytest.fail(f"Ray did not get to {count} running replicas in {timeout:.0f} s "
                f"({running_replicas(server)} processes, replicas seen {seen})\n{server.tail()}")


def kill_one_replica_after(server: RunningServer, delay: float) -> threading.Thread:
    """SIGKILL one replica's worker process ``delay`` seconds from now (mid-load), choosing one
    that is busy generating: a kill of the first one listed once broke none of the retrying
    client's 80 streams (Zen 4), and a kill that breaks nothing tests nothing."""
    def kill() -> None:
        time.sleep(delay)
        deadline = time.monotonic() + 15.0
        while True:
            victims = replica_processes(server)
            busy = [process for process in victims if _cpu_percent(process) > 30.0]
            if busy or time.monotonic() > deadline:
                break
        assert victims, "no replica process to kill"
        (busy or victims)[0].kill()

    killer = threading.Thread(target=kill)
    killer.start()
    return killer


@contextlib.contextmanager
def ray_serve(*flags: str) -> Iterator[RunningServer]:
    """The server (``flags`` after :data:`SERVE_FLAGS`, so they win), and afterwards no
    process of its Ray cluster left (killed if need be)."""
    port = free_port()
    family: list[psutil.Process] = []
    try:
        with start_server(*SERVE_FLAGS, *flags, "--port", str(port)) as server:
            try:
                yield server
            finally:  # what runs now (replicas Ray restarted included); start_server then stops it
                family = psutil.Process(server.process.pid).children(recursive=True)
    finally:
        _, alive = psutil.wait_procs(family, timeout=30)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        assert not alive, f"Ray processes outlived vinolm serve: {[p.pid for p in alive]}"


def redeploy(server: RunningServer, *argv: str) -> None:
    """Redeploy the running app by name with other ``vinolm serve`` settings, from a driver
    attached to the server's cluster: what ``application``'s docstring promises."""
    import ray
    from ray import serve

    from vinolm.deploy.ray_serve import application
    from vinolm.server.cli import add_ray_args, add_serve_args

    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    add_ray_args(parser)
    settings = vars(parser.parse_args([*SERVE_FLAGS, "--port", server.host_port.rpartition(":")[2],
                                       "--grpc-port", str(server.grpc_port), "--host", "127.0.0.1",
                                       *argv]))
    announced = next(line for line in server.log if RAY_CLUSTER_PREFIX in line)
    address = announced.split(RAY_CLUSTER_PREFIX, 1)[1].split()[0]
    ray.init(address=address, namespace=APP_NAME, log_to_driver=False)
    try:
        serve.run(application(settings), name=APP_NAME, route_prefix="/")
    finally:
        ray.shutdown()


def load(server: RunningServer) -> tuple[list[Outcome], list[Outcome]]:
    """40 OpenAI streams and a few gRPC streams at once, each bounded by its time-out."""
    prompts = [f"Count from {i} to {i + 5}." for i in range(REQUESTS)]
    with ThreadPoolExecutor(REQUESTS + GRPC_STREAMS) as pool:
        chats = [pool.submit(openai_stream, server.base_url, p) for p in prompts]
        streams = [pool.submit(grpc_stream, server.grpc_target, p) for p in prompts[:GRPC_STREAMS]]
        return ([f.result(timeout=REQUEST_TIMEOUT + 15) for f in chats],
                [f.result(timeout=REQUEST_TIMEOUT + 15) for f in streams])


def load_while(server: RunningServer, change: threading.Thread, limit: float = 120) -> list[Outcome]:
    """Waves of :func:`load` from before ``change`` starts until one wave after it ends."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + limit
    change.start()
    while change.is_alive():
        assert time.monotonic() < deadline, "the redeploy did not finish"
        chats, streams = load(server)
        outcomes += chats + streams
    chats, streams = load(server)
    return outcomes + chats + streams


def test_a_replica_killed_under_load_and_a_redeploy_to_one(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A cluster started by ray.init requires its token (~/.ray/auth_token) from other drivers.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with ray_serve() as server:
        wait_for_replicas(server, 2)

        # 1. SIGKILL mid-load, no retries: everything ends, whole or visibly broken.
        killer = kill_one_replica_after(server, 2.0)
        chats, streams = load(server)
        killer.join(timeout=10)
        whole = sum(o.whole for o in chats)
        report = [o.detail[:60] for o in chats + streams if not o.whole]
        with capsys.disabled():
            print(f"\nkill, no retries: {whole}/{REQUESTS} chats whole, "
                  f"{sum(o.whole for o in streams)}/{GRPC_STREAMS} gRPC streams whole; failures: {report}")
        assert 0 < whole < REQUESTS, "the kill should break some streams and spare others"

        # 2. Ray restores 2 replicas, and traffic reaches both.
        restored = wait_for_replicas(server, 2)
        assert len(restored) == 2

        # 3. The retrying client gets all its answers through another kill. Twice the load of step 1,
        # so the kill 2 s in still finds streams running on a fast CPU (once, on an AMX Xeon, all
        # 40 had ended and the test saw no retry).
        policy = CountedRetries(attempts=6, base_delay=0.5, max_delay=4.0)
        target = Target(url=server.base_url, model=MODEL, max_tokens=MAX_TOKENS, retry=policy)
        prompts = [f"Name {i + 1} fruits." for i in range(2 * REQUESTS)]
        killer = kill_one_replica_after(server, 2.0)
        with ThreadPoolExecutor(1) as pool:
            result = pool.submit(openai_client.run, target, prompts, True).result(timeout=180)
        killer.join(timeout=10)
        with capsys.disabled():
            print(f"kill, retrying client: {sum(map(bool, result.completions))}/{len(prompts)} answers, "
                  f"{len(policy.retries)} retries")
        assert policy.retries, "the kill should have cost some requests a retry"
        assert all(result.completions) and all(0 < n <= MAX_TOKENS for n in result.token_counts), result
        wait_for_replicas(server, 2)

        # 4. Scale 2 -> 1 under load: nothing lost, no retries.
        mover = threading.Thread(target=redeploy, args=(server, "--replicas", "1"))
        outcomes = load_while(server, mover)
        lost = [o.detail for o in outcomes if not o.whole]
        assert not lost, f"{len(lost)} of {len(outcomes)} lost: {lost}"
        survivor = wait_for_replicas(server, 1)
        retired = [o for o in outcomes if o.replica and o.replica not in survivor]
        assert retired, "no request ran on a replica the redeploy retired: it did not happen under load"
        with capsys.disabled():
            print(f"redeploy 2 -> 1 under load: {sum(o.whole for o in outcomes)}/{len(outcomes)} whole, "
                  f"{len(retired)} of them on retired replicas")


TURNS = 5


def sessions_for(replicas: list[str], per_replica: int) -> dict[str, str]:
    """Session ids, ``per_replica`` of them preferred by each replica: {session: its replica}."""
    chosen: dict[str, str] = {}
    for i in range(1000):
        session = f"conversation-{i}"
        owner = preferred(session, replicas, str)
        if sum(o == owner for o in chosen.values()) < per_replica:
            chosen[session] = owner
        if len(chosen) == per_replica * len(replicas):
            return chosen
    raise AssertionError("no spread of sessions found")


def conversation(base_url: str, session: str | None, turns: int) -> list[str]:
    """A chat of ``turns`` turns through the openai SDK; the replica that answered each."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0, timeout=REQUEST_TIMEOUT,
                    default_headers={SESSION_HEADER: session} if session else None)
    messages: list[dict[str, str]] = []
    replicas = []
    for turn in range(1, turns + 1):
        messages.append({"role": "user", "content": f"Turn {turn}: name a colour and a fruit."})
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages,  # type: ignore[arg-type]
                                                               max_tokens=16, temperature=0)
        replicas.append(raw.headers.get(REPLICA_HEADER, ""))
        messages.append({"role": "assistant", "content": raw.parse().choices[0].message.content or ""})
    return replicas


def test_a_conversation_stays_on_its_replica_and_sessions_spread(capsys: pytest.CaptureFixture[str]) -> None:
    with ray_serve() as server:
        replicas = sorted(wait_for_replicas(server, 2))
        expected = sessions_for(replicas, per_replica=2)
        with ThreadPoolExecutor(len(expected)) as pool:
            served = dict(zip(expected, pool.map(lambda s: conversation(server.base_url, s, TURNS), expected)))
        # Without a session Ray takes the less loaded of two replicas. One client's turns one at a
        # time may all find the same one so (Ray caches queue lengths between probes: 15 of 15 on
        # one replica in a run of 2026-12-06); conversations at once spread.
        with ThreadPoolExecutor(4) as pool:
            keyless = [r for chat in pool.map(lambda _: conversation(server.base_url, None, TURNS), range(4))
                       for r in chat]
    with capsys.disabled():
        print(f"\naffinity: {served}; without a session: {keyless}")
    assert served == {session: [owner] * TURNS for session, owner in expected.items()}
    assert set(keyless) == set(replicas), "conversations without a session, 4 at once, should reach both replicas"


def test_sustained_load_scales_one_replica_to_two(capsys: pytest.CaptureFixture[str]) -> None:
    """Ray's autoscaler on vinolm's queue-depth target (``target_ongoing_requests`` = the batch
    size, 2 here): 8 streams at once want 4 replicas, capped at 2. Ray waits ``upscale_delay_s``
    (30 s) of such load before it adds one; the bound is generous for a loaded machine."""
    with ray_serve("--replicas", "1", "--min-replicas", "1", "--max-replicas", "2",
                   "--max-concurrency", "2") as server:
        wait_for_replicas(server, 1)
        began = time.monotonic()
        outcomes: list[Outcome] = []
        with ThreadPoolExecutor(8) as pool:
            while running_replicas(server) < 2:
                assert time.monotonic() - began < 240, f"no second replica after 240 s of load\n{server.tail()}"
                outcomes += pool.map(lambda i: openai_stream(server.base_url, f"Tell story number {i}."), range(8))
        scaled_after = time.monotonic() - began
        answered = wait_for_replicas(server, 2)
    lost = [o.detail for o in outcomes if not o.whole]
    with capsys.disabled():
        print(f"\nautoscaling: 2 replicas after {scaled_after:.0f} s of load, {len(outcomes)} requests, "
              f"both answering: {sorted(answered)}")
    assert len(answered) == 2 and not lost, lost
