"""Session affinity's choice of replica (rendezvous hashing, the fallback ranks) without a
Ray cluster; the e2e proof that the real proxy follows it is in tests/e2e/test_ray.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import pytest

from vinolm.deploy.affinity import preferred, ranked, weight

REPLICAS = ["2mc5y7ft", "t32a88uc", "q0z81kd4", "m7yv3wse"]
SESSIONS = [f"conversation-{i}" for i in range(2000)]


def ident(replica: str) -> str:
    return replica


def owners(replicas: list[str]) -> dict[str, str]:
    return {session: preferred(session, replicas, ident) for session in SESSIONS}


def test_the_weight_is_the_same_in_every_process() -> None:
    """Every proxy (its own process, its own PYTHONHASHSEED) must pick the same replica."""
    code = "from vinolm.deploy.affinity import weight; print(weight('conv-1', 'abc'))"
    other = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                           env={"PYTHONHASHSEED": "123"}).stdout
    assert int(other) == weight("conv-1", "abc")


def test_sessions_spread_evenly() -> None:
    counts = Counter(owners(REPLICAS).values())
    assert set(counts) == set(REPLICAS)
    assert all(abs(n - len(SESSIONS) / len(REPLICAS)) < 0.1 * len(SESSIONS) for n in counts.values()), counts


def test_a_dead_replica_moves_only_its_own_sessions() -> None:
    before, after = owners(REPLICAS), owners(REPLICAS[1:])
    moved = {session for session in SESSIONS if before[session] != after[session]}
    assert moved == {session for session, owner in before.items() if owner == REPLICAS[0]}


def test_a_new_replica_takes_sessions_only_for_itself() -> None:
    before, after = owners(REPLICAS), owners([*REPLICAS, "n3wr3pl1"])
    assert {after[session] for session in SESSIONS if before[session] != after[session]} == {"n3wr3pl1"}


def test_the_ranks_are_the_session_replica_then_two_others() -> None:
    ranks = ranked("conversation-7", REPLICAS, ident)
    first = preferred("conversation-7", REPLICAS, ident)
    assert ranks[0] == [first]
    assert len(ranks) == 2 and len(set(ranks[1])) == 2 and first not in ranks[1]


def test_without_a_session_two_of_all() -> None:
    seen: set[str] = set()
    for _ in range(200):
        (pair,) = ranked("", REPLICAS, ident)
        assert len(set(pair)) == 2
        seen |= set(pair)
    assert seen == set(REPLICAS)


@pytest.mark.parametrize(("replicas", "expected"), [([], []), (["only"], [["only"]])])
def test_none_or_one_replica(replicas: list[str], expected: list[list[str]]) -> None:
    assert ranked("conversation-7", replicas, ident) == expected


def replica(unique_id: str) -> SimpleNamespace:
    return SimpleNamespace(replica_id=SimpleNamespace(unique_id=unique_id))


def test_the_router_reads_the_proxy_session_and_backs_off_after_all_ranks() -> None:
    """Ray's proxy puts the ``x-session-id`` header in ``metadata.session_id``."""
    router = pytest.importorskip("vinolm.deploy.router")  # Ray, imported only when tests run
    candidates = [replica(r) for r in REPLICAS]
    request = SimpleNamespace(metadata=SimpleNamespace(session_id="conversation-7"),
                              routing_context=SimpleNamespace(should_backoff=False))
    ranks = asyncio.run(router.SessionAffinityRouter.choose_replicas(None, candidates, request))  # type: ignore[arg-type]
    assert ranks[0][0].replica_id.unique_id == preferred("conversation-7", REPLICAS, ident)
    assert request.routing_context.should_backoff


def test_the_deployment_routes_with_session_affinity() -> None:
    pytest.importorskip("ray.serve")
    from tests.unit.test_deploy_ray import parse

    from vinolm.deploy.ray_serve import deployment_options

    config = deployment_options(parse("--ray-cpus", "4"))["request_router_config"]
    assert config.request_router_class == "vinolm.deploy.router.SessionAffinityRouter"  # Ray keeps the path
