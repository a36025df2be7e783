"""``vinolm serve --replicas N``: the same app, N times, behind Ray Serve's HTTP proxy.

Each replica runs the whole vinolm app (``build_app`` over the registry ``vinolm serve``
builds, so OpenAI, KServe REST, the UI and /metrics are the very same code) and Ray's
proxy spreads requests over the replicas. This split was chosen over one CPU-less ingress
deployment in front of engine replicas: that one would need a second, handle-based
implementation of every streaming route (the issue forbids a twin), and adds a hop of
pickled chunks per token, while the proxy already streams ``StreamingResponse`` bodies.

What Ray's defaults get wrong for a CPU LLM server, and what is set instead:
``max_ongoing_requests`` (5) becomes the engine's batch size; a caller's queue past
``--max-queue`` is a 429 with Retry-After (Ray's default is an unbounded queue, then 503);
each replica reserves ``--threads-per-replica`` logical CPUs and tells OpenVINO to use that
many threads with CPU pinning off, so replicas sharing cores do not fight over them.

Routing: ``router.SessionAffinityRouter`` keeps the requests of one conversation (header
``x-session-id``) on one replica, where its history is in the prefix cache.

gRPC: Ray's gRPC proxy serves the KServe service on ``--grpc-port`` and calls the replica's
methods of the RPCs' names (``ray_grpc.GrpcMethods``); clients send metadata
``application: vinolm`` when the cluster serves other applications too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from typing import Any

from vinolm.cliutil import status
from vinolm.deploy.ray_grpc import SERVICER_FUNCTION, GrpcMethods
from vinolm.errors import InvalidRequest

log = logging.getLogger("vinolm.deploy")
APP_NAME = "vinolm"
REPLICA_HEADER = "x-vinolm-replica"
#: Announced with the cluster's address, which a driver needs to redeploy the app by name.
RAY_CLUSTER_PREFIX = "Ray cluster at"


def check_ray_args(args: argparse.Namespace) -> None:
    """The Ray flags' own rules, checked before anything starts."""
    if args.replicas < 1:
        raise InvalidRequest("--replicas must be >= 1")
    if args.threads_per_replica < 1:
        raise InvalidRequest("--threads-per-replica must be >= 1")
    if (args.min_replicas is None) != (args.max_replicas is None):
        raise InvalidRequest("--min-replicas and --max-replicas go together (autoscaling between them)")
    if args.min_replicas is not None and not 0 < args.min_replicas <= args.replicas <= args.max_replicas:
        raise InvalidRequest("autoscaling needs 1 <= --min-replicas <= --replicas <= --max-replicas")
    if args.port == 0:
        raise InvalidRequest("--port 0 is not possible with --replicas: Ray's proxy needs a fixed port")
    if args.ray_cpus is not None and args.ray_address:
        raise InvalidRequest("--ray-cpus sizes a cluster started here; an existing one (--ray-address) has its own")
    if args.ray_cpus is not None and args.ray_cpus < args.threads_per_replica * args.replicas:
        raise InvalidRequest(f"--ray-cpus {args.ray_cpus} cannot hold {args.replicas} replica(s) of "
                             f"{args.threads_per_replica} CPU(s) each")


def replica_ov_config(ov_config: list[str], threads: int) -> list[str]:
    """The replica's ``--ov-config``: its thread count and no pinning, unless the user chose."""
    chosen = {pair.partition("=")[0].strip() for pair in ov_config}
    extra = [f"{key}={value}" for key, value in (("INFERENCE_NUM_THREADS", threads), ("ENABLE_CPU_PINNING", "false"))
             if key not in chosen]
    return [*ov_config, *extra]


def deployment_options(args: argparse.Namespace) -> dict[str, Any]:
    """Ray Serve's knobs, from the serve flags."""
    from ray.serve.config import BackpressureConfig, RequestRouterConfig

    from vinolm.deploy.router import SessionAffinityRouter

    options: dict[str, Any] = {
        "max_ongoing_requests": args.max_concurrency,
        "max_queued_requests": args.max_queue,
        "backpressure_config": BackpressureConfig(status_code=429, retry_after_s=1),
        # Ray stops routing to a replica that is shutting down, waits for its ongoing requests
        # up to this long, then calls __del__ (the app's own drain closes the rest).
        "graceful_shutdown_timeout_s": args.drain_timeout,
        "health_check_period_s": 2.0,
        "health_check_timeout_s": 30.0,
        "ray_actor_options": {"num_cpus": args.threads_per_replica},
        # a conversation's turns go to the replica holding its prefix cache (x-session-id)
        "request_router_config": RequestRouterConfig(request_router_class=SessionAffinityRouter),
    }
    if args.min_replicas is None:
        options["num_replicas"] = args.replicas
    else:  # on queue depth: a replica per batch of requests in flight or waiting
        options["autoscaling_config"] = {"min_replicas": args.min_replicas, "max_replicas": args.max_replicas,
                                         "initial_replicas": args.replicas,
                                         "target_ongoing_requests": args.max_concurrency}
    return options


class VinolmReplica(GrpcMethods):
    """One replica: the registry and app that ``vinolm serve`` would build, in a Ray actor."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from ray import serve

        from vinolm.server.cli import load_service, served_models
        from vinolm.server.metrics import ServerMetrics
        from vinolm.server.registry import Registry
        from vinolm.server.service import Limits

        args = argparse.Namespace(**settings)
        args.ov_config = replica_ov_config(args.ov_config, args.threads_per_replica)
        limits = Limits(max_concurrency=args.max_concurrency, max_queue=args.max_queue,
                        max_tokens_limit=args.max_tokens_limit, max_request_bytes=args.max_request_bytes)
        metrics = ServerMetrics()
        self.args = args
        self.registry = Registry(served_models(args), lambda model: load_service(model, args, limits, metrics),
                                 max_loaded=args.max_loaded, keep_alive=args.keep_alive)
        self.registry.service(None)  # the first model loads before the replica counts as started
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self._serve_grpc(self.registry, args.api_key)

    def __serve_build_asgi_app__(self) -> Any:
        from vinolm.server.app import build_app

        app = build_app(self.registry, api_key=self.args.api_key, ui=not self.args.no_ui)
        app.add_middleware(ReplicaHeaderMiddleware, replica=self.replica_id)
        return app

    def check_health(self) -> None:
        """Ray restarts a replica whose model is not loaded any more (a dead engine)."""
        if self.registry.state(None) == "failed":
            raise RuntimeError("the first model failed to load")

    async def __del__(self) -> None:
        """Ray calls this once it stopped routing here and waited for ongoing requests; the
        app's drain (off the event loop, which the last streams still need) closes the rest."""
        from vinolm.server.cli import drain

        registry = getattr(self, "registry", None)
        if registry is not None:
            await asyncio.to_thread(drain, registry, self.args.drain_timeout)
            registry.close()


class ReplicaHeaderMiddleware:
    """``x-vinolm-replica`` on every response: which replica answered (pure ASGI, so
    streamed bodies pass through untouched)."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, tagged)


def application(settings: dict[str, Any]) -> Any:
    """The Ray Serve application for these ``vinolm serve`` settings (``vars(args)``): what
    ``serve.run`` deploys, or redeploys with other settings (a new replica count)."""
    from ray import serve

    options = deployment_options(argparse.Namespace(**settings))
    replica = serve.deployment(name="VinolmReplica", **options)(serve.ingress()(VinolmReplica))
    return replica.bind(settings)


def build(config: dict[str, Any]) -> Any:
    """Application builder for a Ray Serve config file (a KubeRay ``RayService``, ``serve
    deploy``): ``import_path: vinolm.deploy.ray_serve:build`` with ``args: {argv: [...]}``, the
    ``vinolm serve`` flags, parsed and checked as the CLI does. The config's ``http_options`` /
    ``grpc_options`` own the ports there, so ``--port`` and ``--grpc-port`` are not read."""
    from vinolm.cli import build_parser

    args = build_parser().parse_args(["serve", *map(str, config.get("argv", []))])
    args.replicas = args.replicas or 1
    check_ray_args(args)
    return application({key: value for key, value in vars(args).items() if key != "func"})


def serve_with_ray(args: argparse.Namespace) -> int:
    """Deploy, announce, then wait for SIGTERM/SIGINT and take the app down gracefully."""
    check_ray_args(args)
    import ray
    from ray import serve
    from ray.serve.config import HTTPOptions, gRPCOptions

    from vinolm.server.cli import READY_PREFIX

    settings = {key: value for key, value in vars(args).items() if key != "func"}
    own_cluster = not args.ray_address
    # Asked to stay on loopback unless the server listens beyond it; Ray 2.60 still binds its
    # cluster to the machine's address (resolve_ip_for_localhost), guarded by its token auth.
    here = {"include_dashboard": False, "_node_ip_address": "127.0.0.1"} if args.host in ("127.0.0.1", "localhost") \
        else {"include_dashboard": False}
    ray.init(address=args.ray_address or None, namespace=APP_NAME, log_to_driver=False,
             **({**here, "num_cpus": args.ray_cpus} if own_cluster else {}))
    grpc = gRPCOptions(port=args.grpc_port, grpc_servicer_functions=[SERVICER_FUNCTION]) if args.grpc_port else None
    try:
        serve.start(http_options=HTTPOptions(host=args.host, port=args.port), grpc_options=grpc)
        status(f"deploying {args.replicas} replica(s) on Ray ({args.threads_per_replica} thread(s) each); "
               f"{RAY_CLUSTER_PREFIX} {ray.get_runtime_context().gcs_address} (redeploy: docs/deploy.md)")
        serve.run(application(settings), name=APP_NAME, route_prefix="/")
        stop = _wait_for_signal()
        shown = f"[{args.host}]" if ":" in args.host else args.host
        status(f"{READY_PREFIX} http://{shown}:{args.port} · OpenAI http://{shown}:{args.port}/v1 · "
               f"{args.replicas} Ray Serve replica(s) · "
               + (f"gRPC {shown}:{args.grpc_port}" if args.grpc_port else "gRPC off"))
        stop.wait()
        status("stopping: Ray drains the replicas (new requests go nowhere, in-flight ones finish)")
        serve.delete(APP_NAME)
        if own_cluster:
            serve.shutdown()
        return 0
    finally:
        ray.shutdown()
        status("stopped")


def _wait_for_signal() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
