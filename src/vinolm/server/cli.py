"""``vinolm serve``: load the model once, then serve HTTP (OpenAI, KServe REST, UI) and gRPC.

Only argparse and light helpers are imported here; uvicorn, FastAPI and the engine are
imported when the command runs, so ``vinolm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vinolm.cliutil import add_model_args, add_speculation_args, speculation_from_args, status
from vinolm.cpu import memory_gb
from vinolm.engines.base import KV_CACHE_GB, MAX_BATCHED_TOKENS
from vinolm.errors import InvalidRequest
from vinolm.models import DEFAULT_MODEL, locate_source

if TYPE_CHECKING:
    from vinolm.server.metrics import ServerMetrics
    from vinolm.server.registry import Registry, ServedModel
    from vinolm.server.service import Limits, ModelService

log = logging.getLogger("vinolm.server")
READY_PREFIX = "ready:"  # the announcement line starts "vinolm: ready: http://HOST:PORT ..."


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over the OpenAI API, KServe v2 REST and gRPC",
                       description="Load a model once and serve it: OpenAI API under /v1, KServe v2 REST "
                                   "under /v2, gRPC on --grpc-port, docs at /docs, metrics at /metrics.")
    add_serve_args(p)
    add_ray_args(p)
    p.set_defaults(func=cmd_serve)


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """Replicas on Ray Serve (``pip install 'vinolm[ray]'``; see docs/deploy.md)."""
    ray = p.add_argument_group("replicas on Ray Serve (vinolm[ray])")
    ray.add_argument("--replicas", type=int, default=None, metavar="N",
                     help="serve N replicas of this server behind Ray Serve's HTTP proxy (default: one plain process)")
    ray.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                     help="join this Ray cluster (`ray start --head`) instead of starting one here")
    ray.add_argument("--threads-per-replica", type=int, default=1, metavar="N",
                     help="CPUs each replica reserves and OpenVINO threads it runs (CPU pinning off)")
    ray.add_argument("--min-replicas", type=int, default=None, metavar="N",
                     help="autoscale on queue depth between --min-replicas and --max-replicas")
    ray.add_argument("--max-replicas", type=int, default=None, metavar="N")
    ray.add_argument("--ray-cpus", type=int, default=None, metavar="N",
                     help="logical CPUs of the Ray cluster started here (default: the machine's; "
                          "not with --ray-address)")


def add_serve_args(p: argparse.ArgumentParser) -> None:
    """The serve options, shared with ``vinolm ui``."""
    add_model_args(p, several=True)
    add_speculation_args(p)
    many = p.add_argument_group("several models")
    many.add_argument("--models-dir", default=None, metavar="DIR",
                      help="also serve every OpenVINO model folder in DIR (named after its folder)")
    many.add_argument("--max-loaded", type=int, default=0,
                      help="models loaded at once; the least recently used idle one is unloaded (0 = no limit)")
    many.add_argument("--keep-alive", type=float, default=-1.0, metavar="SECONDS",
                      help="unload a model idle this long (-1 = keep it loaded)")
    many.add_argument("--preload", action="store_true",
                      help="load every model at start (default: the first; the others on their first request)")
    net = p.add_argument_group("network")
    net.add_argument("--served-model-name", nargs="+", default=None, metavar="NAME",
                     help="name(s) clients use for the first model (default: its own name)")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    net.add_argument("--port", type=int, default=8000, help="HTTP port (0 = any free port, announced at start)")
    net.add_argument("--grpc-port", type=int, default=9000, help="KServe v2 gRPC port (0 = no gRPC)")
    net.add_argument("--api-key", default=os.environ.get("VINOLM_API_KEY") or None,
                     help="require this key on every API route (default: $VINOLM_API_KEY, else none)")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-concurrency", type=int, default=8, help="requests generated together (batch slots)")
    lim.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond those; more get 429")
    lim.add_argument("--max-tokens-limit", type=int, default=4096, help="largest max_tokens a request may ask")
    lim.add_argument("--max-request-bytes", type=int, default=1 << 20, help="largest request body (413 above)")
    lim.add_argument("--kv-cache-gb", type=int, default=None, metavar="GB",
                     help=f"KV cache shared by a model's requests, also its prefix cache (genai engine; default "
                          f"{KV_CACHE_GB}; 0 = grown as requests need it, keeping little history)")
    lim.add_argument("--max-batched-tokens", type=int, default=None, metavar="N",
                     help=f"prompt tokens one batch step takes (genai engine; default {MAX_BATCHED_TOKENS}): more "
                          "is more throughput, and longer pauses for the other streams while a long prompt goes in")
    lim.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS",
                     help="on SIGTERM or Ctrl-C: refuse new requests (503, not ready) and let those in "
                          "flight finish for up to this long before exiting; a second signal exits at once")
    p.add_argument("--no-ui", action="store_true", help="do not mount the web UI at /ui (faster start)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def cmd_serve(args: argparse.Namespace) -> int:
    _check_args(args)
    _configure_logging(args.log_level)
    if getattr(args, "replicas", None) is not None:
        return _serve_on_ray(args)
    from vinolm.server.metrics import ServerMetrics
    from vinolm.server.registry import Registry
    from vinolm.server.service import Limits

    models = served_models(args)
    limits = Limits(max_concurrency=args.max_concurrency, max_queue=args.max_queue,
                    max_tokens_limit=args.max_tokens_limit, max_request_bytes=args.max_request_bytes)
    metrics = ServerMetrics()
    registry = Registry(models, lambda model: load_service(model, args, limits, metrics),
                        max_loaded=args.max_loaded, keep_alive=args.keep_alive)
    grpc_server = None
    try:
        _load_at_start(registry, args.preload)
        grpc_server = _start_grpc(registry, args)
        return _run_http(registry, args, grpc_port=args.grpc_port if grpc_server else 0)
    finally:
        if grpc_server is not None:
            _stop_within(grpc_server, seconds=5)
        registry.close()
        status("stopped")


def _serve_on_ray(args: argparse.Namespace) -> int:
    try:
        import ray.serve  # noqa: F401

        from vinolm.deploy.ray_serve import serve_with_ray
    except ImportError:
        raise InvalidRequest("--replicas needs Ray Serve: pip install 'vinolm[ray]'") from None
    return serve_with_ray(args)


def served_models(args: argparse.Namespace) -> list[ServedModel]:
    """``--model [NAME=]MODEL`` (repeatable) and the folders of ``--models-dir``, in order."""
    from vinolm.engines import engine_class
    from vinolm.engines.ovconfig import check_device, parse_ov_config
    from vinolm.server.registry import ServedModel

    engine_class(args.engine)  # unknown engine: fail before loading anything
    ov_config = parse_ov_config(args.ov_config)
    check_device(args.device)
    refs = list(args.model or [])
    if args.models_dir:
        refs += [str(folder) for folder in _model_folders(Path(args.models_dir))]
    models = []
    for ref in refs or [DEFAULT_MODEL]:
        name, sep, location = ref.partition("=")
        if not sep or not name or "/" in name:
            name, location = _name_of(ref), ref
        locate_source(location)  # a reference that is no model: one line and exit 2, before any load
        models.append(ServedModel(location, [name], engine=args.engine, device=args.device, ov_config=ov_config,
                                  weight_format=args.weight_format, max_concurrency=args.max_concurrency))
    if args.served_model_name:
        models[0].names = list(args.served_model_name)
    names = [n for m in models for n in m.names]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidRequest(f"two models are served as {', '.join(twice)}: name them with --model NAME=MODEL")
    return models


def _model_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise InvalidRequest(f"--models-dir {root} is not a folder")
    # not the hidden temporary folders of exports in progress (or killed midway)
    found = sorted(xml.parent for xml in root.glob("*/openvino_model.xml") if not xml.parent.name.startswith("."))
    if not found:
        raise InvalidRequest(f"--models-dir {root} holds no OpenVINO model folder (DIR/NAME/openvino_model.xml)")
    return found


def _name_of(ref: str) -> str:
    """A catalog name stays itself; a folder is named after it (``smollm2-135m/int4`` ->
    ``smollm2-135m-int4``, since vinolm's own exports are named by their weight format)."""
    path = Path(ref).expanduser()
    if not path.exists():
        return ref
    from vinolm.export import WEIGHT_FORMATS

    folder = path.resolve()
    stem = folder.stem if folder.is_file() else folder.name
    return f"{folder.parent.name}-{stem}" if stem in WEIGHT_FORMATS else stem


def load_service(model: ServedModel, args: argparse.Namespace, limits: Limits, metrics: ServerMetrics) -> ModelService:
    """Prepare (exporting once if needed) and load one model: an embedding engine for an
    embedding model, else the chosen generation engine with continuous batching."""
    from vinolm.engines import EngineOptions, load_engine
    from vinolm.models import prepare
    from vinolm.server.service import ModelService

    prepared = prepare(model.reference, model.weight_format, progress=status)
    options = EngineOptions(device=model.device, ov_config=dict(model.ov_config), batching=True,
                            max_concurrency=model.max_concurrency or args.max_concurrency, **batching_args(args))
    if prepared.is_embedding:
        from vinolm.engines.embedding import EmbeddingEngine

        engine: Any = EmbeddingEngine(prepared, options)
    else:
        options.speculation = speculation_from_args(args)
        engine = load_engine(model.engine, prepared, options)
    return ModelService(engine, model.names, limits, metrics)


def batching_args(args: argparse.Namespace) -> dict[str, int]:
    """The continuous-batching settings the user gave (the engine's defaults stand for the rest)."""
    return {name: getattr(args, name) for name in ("kv_cache_gb", "max_batched_tokens")
            if getattr(args, name, None) is not None}


def _load_at_start(registry: Registry, everything: bool) -> None:
    """The first model (its failure ends the start with its reason), or all of them."""
    from vinolm.errors import EngineError, Unavailable

    try:
        registry.service(None)
    except Unavailable as exc:
        raise EngineError(exc.message) from None
    if everything:
        for model in registry.states()[1:]:
            with contextlib.suppress(Unavailable):  # logged; retried on its first request
                registry.service(model["name"])


def _stop_within(server: Any, seconds: float) -> None:
    """``server.stop()``, but a shutdown that hangs must not keep the process alive."""
    stopper = threading.Thread(target=server.stop, name="vinolm-grpc-stop", daemon=True)
    stopper.start()
    stopper.join(seconds)
    if stopper.is_alive():
        log.warning("the gRPC server did not stop within %.0f s; exiting anyway", seconds)


def _check_args(args: argparse.Namespace) -> None:
    if args.max_loaded < 0:
        raise InvalidRequest("--max-loaded must be >= 0 (0 = no limit)")
    if not args.drain_timeout >= 0:
        raise InvalidRequest("--drain-timeout must be >= 0 seconds")
    for name, low in (("max_concurrency", 1), ("max_queue", 0), ("max_tokens_limit", 1), ("max_request_bytes", 1),
                      ("kv_cache_gb", 0), ("max_batched_tokens", 1)):
        value = getattr(args, name)
        if value is not None and value < low:  # None: the engine's default
            raise InvalidRequest(f"--{name.replace('_', '-')} must be >= {low}")
    if args.kv_cache_gb is not None and args.kv_cache_gb > memory_gb():
        raise InvalidRequest(f"--kv-cache-gb {args.kv_cache_gb} is more than this machine's memory "
                             f"({memory_gb():.1f} GB); the cache fills up to it as prompts stay cached")
    if batching_args(args) and args.engine != "genai":
        raise InvalidRequest("--kv-cache-gb and --max-batched-tokens size the genai engine's continuous batching; "
                             f"the {args.engine} engine serves one request at a time")
    spec = speculation_from_args(args)
    if spec is not None and args.engine != "genai" and not (args.engine == "native" and spec.draft is None):
        raise InvalidRequest("--prompt-lookup runs on the genai and native engines, --draft-model on genai")
    for name in ("port", "grpc_port"):
        if not 0 <= getattr(args, name) <= 65535:
            raise InvalidRequest(f"--{name.replace('_', '-')} must be a port number (0-65535)")
        if getattr(args, name):
            _check_free(args.host, getattr(args, name), f"--{name.replace('_', '-')}")
    if args.served_model_name is not None and not all(name.strip() for name in args.served_model_name):
        raise InvalidRequest("--served-model-name takes non-empty names")


def _check_free(host: str, port: int, flag: str) -> None:
    """Refuse a port another process listens on before any model loads (uvicorn found it
    after the load and exited 3 with a log line; gRPC printed its C-core's)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
            probe.bind(address)
    except OSError as exc:
        reason = "in use" if getattr(exc, "errno", None) == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise InvalidRequest(f"{flag} {port}: cannot listen on {host}:{port} ({reason})") from None


def _configure_logging(level: str) -> None:
    """Logs on stderr; the access log as bare JSON lines on stdout, one per request."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    access = logging.getLogger("vinolm.access")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.propagate = False


def _start_grpc(service: Registry, args: argparse.Namespace) -> Any:
    if not args.grpc_port:
        return None
    from vinolm.server.app import optional

    serve_grpc = optional("vinolm.server.grpc", "serve_grpc")
    if serve_grpc is None:
        log.warning("the gRPC server is not part of this build; serving HTTP only")
        return None
    return serve_grpc(service, args.host, args.grpc_port, args.api_key)


def _run_http(registry: Registry, args: argparse.Namespace, grpc_port: int) -> int:
    import uvicorn

    from vinolm.server.app import build_app

    app = build_app(registry, api_key=args.api_key, ui=not args.no_ui)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=5, lifespan="on")

    def announce(port: int) -> None:
        _announce(registry, args.host, port, grpc_port, app.state, keyed=bool(args.api_key))

    server = _Server(config, announce, lambda: drain(registry, args.drain_timeout))
    server.run()
    return 0 if server.started else 1


def drain(service: Registry, seconds: float) -> None:
    """Refuse new requests and wait (up to ``seconds``) for those in flight: what a
    rolling update needs, readiness going false first so traffic moves elsewhere."""
    import time

    service.drain()
    busy = service.in_flight
    if busy:
        status(f"draining: {busy} request(s) in flight, new ones get 503 (up to {seconds:.0f} s; "
               "a second signal stops at once)")
    deadline = time.monotonic() + seconds
    while service.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    if service.in_flight:
        log.warning("stopping with %d request(s) still in flight after %.0f s", service.in_flight, seconds)


def _announce(registry: Registry, host: str, port: int, grpc_port: int, parts: Any, keyed: bool) -> None:
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    where = [f"OpenAI {url}/v1"] + ([f"KServe REST {url}/v2"] if parts.kserve else [])
    where += [f"docs {url}/docs", f"metrics {url}/metrics"] + ([f"UI {url}/ui"] if parts.ui else [])
    where.append(f"gRPC {shown}:{grpc_port}" if grpc_port else "gRPC off")
    service = registry.service(None)
    limits = service.limits
    others = f" (and on demand: {', '.join(registry.names[len(service.served_names):])})" if len(
        registry.states()) > 1 else ""
    status(f"serving {', '.join(service.served_names)} with the {service.engine.name} engine{others} "
           f"({limits.max_concurrency} concurrent, queue {limits.max_queue}"
           f"{', API key required' if keyed else ''})")
    status(f"{READY_PREFIX} {url} · " + " · ".join(where))


class _Server:
    """uvicorn's Server with an announcement once the socket listens and a quiet, clean exit.

    uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown, which would kill the
    process before the gRPC server and the engine are closed; here the first signal runs
    ``on_signal`` (the drain) while the server keeps answering, then asks for shutdown, and
    ``cmd_serve`` closes everything in order. A second signal shuts down at once.
    """

    def __new__(cls, config: Any, on_started: Callable[[int], None], on_signal: Callable[[], None]) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            signalled = False

            def handle_exit(self, sig: int, frame: Any) -> None:
                if self.signalled:
                    super().handle_exit(sig, frame)
                    return
                self.signalled = True

                def drain_then_exit() -> None:
                    try:
                        on_signal()
                    finally:
                        self.should_exit = True

                threading.Thread(target=drain_then_exit, name="vinolm-drain", daemon=True).start()

            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                if self.started and not self.should_exit:
                    on_started(_bound_port(self, config.port))

            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                import signal

                previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)

        return Server(config)


def _bound_port(server: Any, requested: int) -> int:
    """The real port (``--port 0`` asks the OS for a free one)."""
    for listener in getattr(server, "servers", []):
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    return requested
