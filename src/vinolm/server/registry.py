"""The models one server serves: loaded on first use (or at start), at most ``max_loaded`` at
once, the least recently used idle one unloaded to make room, and an idle one unloaded after
its keep-alive - what Ollama (``keep_alive``, ``OLLAMA_MAX_LOADED_MODELS``) and llama.cpp's
router mode do.

Each loaded model is a :class:`~vinolm.server.service.ModelService` of its own (its engine,
admission limits and queue); the registry only decides which are loaded. Protocols ask it
for the service of a request's model; a model that is loading is waited for (bounded), one
that failed to load answers 503 with the reason and is tried again on the next request, and
a full registry whose models are all busy answers 429 instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from vinolm.errors import Overloaded, Unavailable, UnknownModel, VinolmError
from vinolm.models import PreparedModel
from vinolm.server.service import ModelService

log = logging.getLogger("vinolm.registry")
State = Literal["unloaded", "loading", "loaded", "failed"]
#: Keep-alive meaning "never unload while the server runs".
FOREVER = -1.0


@dataclass
class ServedModel:
    """One model as configured: what to load, the names clients use, how long to keep it."""

    reference: str
    names: list[str]
    engine: str = "genai"
    device: str = "CPU"
    ov_config: dict[str, Any] = field(default_factory=dict)
    weight_format: str | None = None
    max_concurrency: int | None = None
    keep_alive: float | None = None  # seconds idle before unloading; None = the registry's

    @property
    def name(self) -> str:
        return self.names[0]

    def task(self) -> str | None:
        """``embedding`` or ``chat`` as far as the reference says without loading it (a catalog
        embedding model, or the prepared folder's export record); None when nothing says."""
        from vinolm.catalog import find_embedding

        if find_embedding(self.reference) is not None:
            return "embedding"
        prepared = self.prepared()
        return None if prepared is None else ("embedding" if prepared.is_embedding else "chat")

    def prepared(self) -> PreparedModel | None:
        """Its prepared folder, without loading or exporting anything, so what a model is (chat
        or embedding, its width) is known before its first request; None when it is not
        prepared yet or cannot be read."""
        from vinolm.models import default_weight_format, locate_source

        try:
            source = locate_source(self.reference)
            folder = source.cache_dir(self.weight_format or default_weight_format(source))
            return PreparedModel.open(folder, name=source.name, entry=source.entry)
        except (VinolmError, OSError, ValueError):
            return None


@dataclass
class _Slot:
    model: ServedModel
    state: State = "unloaded"
    service: ModelService | None = None
    error: str | None = None
    used: float = 0.0
    loads: int = 0
    loaded_at: float = 0.0
    load_seconds: float = 0.0
    ready: threading.Event = field(default_factory=threading.Event)
    #: The last request's own keep-alive (Ollama's ``keep_alive``), over the model's and the server's.
    keep_alive: float | None = None


Loader = Callable[[ServedModel], ModelService]


class Registry:
    def __init__(self, models: list[ServedModel], loader: Loader, max_loaded: int = 0,
                 keep_alive: float = FOREVER, load_timeout: float = 600.0) -> None:
        """``max_loaded`` 0 = no limit; ``keep_alive`` in seconds, :data:`FOREVER` = never unload."""
        self._slots: dict[str, _Slot] = {}
        self._by_name: dict[str, _Slot] = {}
        for model in models:
            slot = _Slot(model)
            self._slots[model.name] = slot
            for name in model.names:
                if name in self._by_name:
                    raise ValueError(f"the served name {name!r} is given to two models")
                self._by_name[name] = slot
        if not self._slots:
            raise ValueError("a registry needs at least one model")
        self._loader = loader
        self.max_loaded = max_loaded
        self.keep_alive = keep_alive
        self.load_timeout = load_timeout
        self._lock = threading.Condition()
        self.draining = False
        self.created = int(time.time())
        self.listeners: list[Callable[[str, str], None]] = []  # (model, event): loaded/unloaded/failed

    @classmethod
    def single(cls, service: ModelService) -> Registry:
        """A registry of one model that is already loaded (tests, ``vinolm ui``)."""
        path = str(getattr(service.engine.model, "path", service.model_name))
        registry = cls([ServedModel(path, list(service.served_names))], lambda _: service)
        registry.service(None)
        return registry

    # -- what is served ----------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    @property
    def default(self) -> str:
        return next(iter(self._slots))

    def resolve(self, name: str | None) -> ServedModel:
        """The model a request names (None: the first one); unknown names are a 404 listing all."""
        slot = self._by_name.get(name or self.default)
        if slot is None:
            raise self.unknown(name)
        return slot.model

    def unknown(self, name: str | None) -> UnknownModel:
        return UnknownModel(f"model {name!r} is not served here; available: {', '.join(self.names)}", param="model")

    def states(self) -> list[dict[str, Any]]:
        """Per configured model: names, state, the last load error, load time, idle seconds."""
        now = time.monotonic()
        with self._lock:
            return [{"name": s.model.name, "names": list(s.model.names), "state": s.state, "error": s.error,
                     "loads": s.loads, "load_seconds": round(s.load_seconds, 3),
                     "idle_seconds": round(now - s.used, 1) if s.state == "loaded" else None,
                     "service": s.service} for s in self._slots.values()]  # fmt: skip

    def state(self, name: str | None) -> State:
        slot = self._by_name[self.resolve(name).names[0]]
        return slot.state

    def loaded(self, name: str | None) -> ModelService | None:
        """The service of a model if it is loaded now (no loading: for readiness and metadata)."""
        slot = self._by_name[self.resolve(name).names[0]]
        return slot.service if slot.state == "loaded" else None

    # -- getting a model ----------------------------------------------------------------------
    def service(self, name: str | None) -> ModelService:
        """The loaded service for ``name``, loading it (and unloading another) if needed.

        Blocks while the model loads, here or in another request, up to ``load_timeout``.
        """
        slot = self._by_name[self.resolve(name).names[0]]
        with self._lock:
            if self.draining:
                raise Unavailable("the server is shutting down and takes no new requests; retry on another one")
            while slot.state == "loading":
                if not self._lock.wait(self.load_timeout):
                    raise Unavailable(f"model {slot.model.name!r} is still loading; retry shortly")
            if slot.state == "loaded" and slot.service is not None:
                slot.used = time.monotonic()
                return slot.service
            self._make_room(slot)
            slot.state, slot.error = "loading", None
        return self._load(slot)

    async def aservice(self, name: str | None) -> ModelService:
        """:meth:`service` for the event loop: a load runs on a worker thread."""
        slot = self._by_name[self.resolve(name).names[0]]
        if slot.state == "loaded" and slot.service is not None and not self.draining:
            slot.used = time.monotonic()
            return slot.service
        return await asyncio.to_thread(self.service, name)

    def _make_room(self, slot: _Slot) -> None:
        """Unload the least recently used idle model if ``max_loaded`` would be passed (lock held)."""
        if not self.max_loaded:
            return
        busy = [s for s in self._slots.values() if s.state in ("loaded", "loading") and s is not slot]
        while len(busy) >= self.max_loaded:
            idle = sorted((s for s in busy if s.state == "loaded" and s.service and not s.service.in_flight),
                          key=lambda s: s.used)
            if not idle:
                names = ", ".join(s.model.name for s in busy)
                raise Overloaded(f"{len(busy)} model(s) are loaded and busy ({names}) and this server "
                                 f"keeps at most {self.max_loaded}; retry shortly")
            self._unload(idle[0], "to make room for " + slot.model.name)
            busy.remove(idle[0])

    def _load(self, slot: _Slot) -> ModelService:
        started = time.perf_counter()
        log.info("loading %s (%s)", slot.model.name, slot.model.reference)
        try:
            service = self._loader(slot.model)
        except Exception as exc:  # noqa: BLE001 - a failed load never takes the server down
            reason = exc.message if isinstance(exc, VinolmError) else f"{type(exc).__name__}: {exc}"
            log.error("loading %s failed: %s", slot.model.name, reason)
            with self._lock:
                slot.state, slot.error, slot.service = "failed", reason, None
                self._lock.notify_all()
            self._tell(slot.model.name, "failed")
            raise Unavailable(f"model {slot.model.name!r} failed to load: {reason}") from None
        with self._lock:
            slot.service, slot.state = service, "loaded"
            slot.used = slot.loaded_at = time.monotonic()
            slot.loads += 1
            slot.load_seconds = time.perf_counter() - started
            self._lock.notify_all()
        log.info("loaded %s in %.1f s", slot.model.name, slot.load_seconds)
        self._tell(slot.model.name, "loaded")
        return service

    def _unload(self, slot: _Slot, why: str) -> None:
        """Close a loaded model's engine (lock held; nothing is in flight on it)."""
        service, slot.service, slot.state, slot.keep_alive = slot.service, None, "unloaded", None
        log.info("unloading %s (%s)", slot.model.name, why)
        if service is not None:
            service.engine.close()
        self._tell(slot.model.name, "unloaded")

    def _tell(self, model: str, event: str) -> None:
        for listener in self.listeners:
            listener(model, event)

    # -- housekeeping ---------------------------------------------------------------------
    def keep(self, name: str, seconds: float) -> None:
        """Keep ``name`` loaded ``seconds`` after its last use (:data:`FOREVER`: never unload),
        over the model's and the server's setting, until another request says otherwise."""
        slot = self._by_name[self.resolve(name).names[0]]
        with self._lock:
            slot.keep_alive = seconds

    def keep_alive_of(self, name: str) -> float:
        slot = self._by_name[self.resolve(name).names[0]]
        return self._keep_alive(slot)

    def _keep_alive(self, slot: _Slot) -> float:
        if slot.keep_alive is not None:
            return slot.keep_alive
        return self.keep_alive if slot.model.keep_alive is None else slot.model.keep_alive

    def sweep(self, now: float | None = None) -> list[str]:
        """Unload idle models whose keep-alive ran out; returns their names."""
        now = time.monotonic() if now is None else now
        done = []
        with self._lock:
            for slot in self._slots.values():
                keep = self._keep_alive(slot)
                service = slot.service
                if slot.state != "loaded" or service is None or keep < 0 or service.in_flight:
                    continue
                if now - slot.used >= keep:
                    self._unload(slot, f"idle for {now - slot.used:.0f} s")
                    done.append(slot.model.name)
        return done

    def unload(self, name: str) -> bool:
        """Unload ``name`` now (KServe's repository ``unload``); False if it was not loaded.

        A model that is loading or has requests in flight is a 429: unloading it would cut
        answers off, and the client can ask again once they end.
        """
        slot = self._by_name[self.resolve(name).names[0]]
        with self._lock:
            busy = slot.state == "loading" or (slot.service is not None and slot.service.in_flight)
            if busy:
                raise Overloaded(f"model {slot.model.name!r} is {'loading' if slot.state == 'loading' else 'busy'}"
                                 "; unload it once its requests end")
            if slot.state != "loaded":
                return False
            self._unload(slot, "asked")
            return True

    def drain(self) -> None:
        with self._lock:
            self.draining = True
            services = [s.service for s in self._slots.values() if s.service is not None]
        for service in services:
            service.drain()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return sum(s.service.in_flight for s in self._slots.values() if s.service is not None)

    def close(self) -> None:
        with self._lock:
            for slot in self._slots.values():
                if slot.state == "loaded":
                    self._unload(slot, "the server stops")


async def service_for(request: Any, name: str | None, task: str = "generate") -> ModelService:
    """The service of the model a request names, from the app's registry (loading it if need
    be), refused with a 400 if the model cannot do ``task`` (``generate`` or ``embed``)."""
    registry: Registry = request.app.state.registry
    return (await registry.aservice(name)).require(task)


def registry_of(request: Any) -> Registry:
    return request.app.state.registry  # type: ignore[no-any-return]
