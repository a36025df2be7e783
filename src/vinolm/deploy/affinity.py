"""Session affinity for ``vinolm serve --replicas``: the turns of one conversation go to the
replica whose prefix cache holds its history.

What a Ray 2.60 request router can see of a request that comes through the HTTP proxy: its
``PendingRequest.metadata`` (request ids, route, ``multiplexed_model_id``, ``session_id``) and
``args``, which hold only the pickled ASGI scope (path and headers). The body, and so the
prompt, is not there: the replica pulls it from the proxy after it was chosen. Prefix
affinity on the prompt's text (what ``ray.serve.llm``'s ``PrefixCacheAffinityRouter`` does for
handle calls that carry a parsed request) is therefore not possible in vinolm's
proxy-in-front-of-replicas split. What the proxy does offer is a session key: it copies the
request header ``x-session-id`` (Ray's ``RAY_SERVE_SESSION_ID_HEADER_KEY`` renames it, in the
cluster's environment) into ``metadata.session_id``; the gRPC proxy does the same with the
metadata key ``session_id``. The client names its conversation, and the router keeps it on
one replica.

The choice: rendezvous (highest random weight) hashing of the session key over the live
replicas' ids. Every proxy computes the same answer with no shared state, and a replica that
dies or is added moves only the sessions it wins or held. When the preferred replica is
saturated (as many requests as ``max_ongoing_requests``: Ray's own test, from its queue
length), the request falls back to the power of two choices among the others, as do requests
without a key. Ray's experimental ``ConsistentHashRouter`` hashes keyless requests randomly
and retries the ring's successors instead, which spreads keyless load blindly.

The choice is here, free of Ray (importing Ray early fixes its auth mode for the process);
``router.SessionAffinityRouter`` is the Ray class that applies it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import TypeVar

R = TypeVar("R")


def weight(session: str, replica: str) -> int:
    """The replica's rendezvous weight for the session: a stable hash (not Python's
    ``hash``, which differs per process), so every proxy agrees."""
    digest = hashlib.blake2b(f"{session}\n{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preferred(session: str, replicas: Sequence[R], replica_id: Callable[[R], str]) -> R:
    """The replica that wins the session's rendezvous among ``replicas`` (not empty)."""
    return max(replicas, key=lambda replica: weight(session, replica_id(replica)))


def two_choices(replicas: Sequence[R]) -> list[R]:
    """Two random replicas (or the one there is); Ray picks the less loaded that accepts."""
    return random.sample(list(replicas), min(2, len(replicas)))


def ranked(session: str, replicas: Sequence[R], replica_id: Callable[[R], str]) -> list[list[R]]:
    """The ranks Ray tries in order: the session's replica alone, then two of the others;
    without a session, two of all."""
    if not replicas:
        return []
    if not session:
        return [two_choices(replicas)]
    first = preferred(session, replicas, replica_id)
    others = [replica for replica in replicas if replica is not first]
    return [[first], two_choices(others)] if others else [[first]]
