"""The Ray Serve request router of ``vinolm serve --replicas``: session affinity
(``affinity``'s choice) over the replicas Ray reports live, Ray doing the rest (queue lengths,
rejections, backoff). Ray's proxies import it by its path, so it imports Ray at the top; the
driver imports it only when it deploys.

Requests are matched to the routing task that chose for them (no FIFO mixin): with FIFO, a
replica chosen for one session would be handed to whichever request is first in the queue.
"""

from __future__ import annotations

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from vinolm.deploy.affinity import ranked


def _unique_id(replica: RunningReplica) -> str:
    return replica.replica_id.unique_id


class SessionAffinityRouter(RequestRouter):
    """Ray's proxy puts the ``x-session-id`` header in ``metadata.session_id`` (empty without)."""

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        session = ""
        if pending_request is not None:
            session = pending_request.metadata.session_id
            # After every rank was full, wait (Ray's backoff) before trying them again.
            pending_request.routing_context.should_backoff = True
        return ranked(session, candidate_replicas, _unique_id)
