"""Server metrics in the Prometheus text format, without a client library.

``ModelService`` reports every request here (``request_done``, ``observe``) and pushes the
running/queued gauges whenever admission changes; ``GET /metrics`` renders the text. The
KV-cache use changes every engine step, so it is read when rendered (``watch_kv_cache``)
rather than pushed. All
updates take one lock, so the engine's worker threads, the event loop and the gRPC threads
can report at once. ``prometheus_client`` is not a dependency: the format is a few lines.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence

from vinolm.types import Metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TPOT_BUCKETS = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0)


class Histogram:
    """Cumulative buckets, a sum and a count; callers hold the owner's lock."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.help = help_text
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts):
            running += count
            out.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {running}')
        out += [f"{self.name}_sum {_number(self.sum)}", f"{self.name}_count {self.count}"]
        return out


class ServerMetrics:
    """The counters, gauges and histograms of one server process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = {}
        self.prompt_tokens = 0
        self.generated_tokens = 0
        #: Speculative decoding on the native engine: tokens proposed, and those taken.
        self.draft_tokens = 0
        self.draft_accepted = 0
        #: Per served model (its first name): requests generating and waiting; the unlabelled
        #: gauges are their sums, so dashboards written for one model keep working.
        self._running: dict[str, int] = {}
        self._queued: dict[str, int] = {}
        #: Per model: loads, unloads and failed loads seen by the registry, and whether loaded now.
        self._model_events: dict[tuple[str, str], int] = {}
        self._loaded: dict[str, int] = {}
        #: Per model: reads the engine's KV-cache use (0..1, None when it has no paged cache).
        self._kv_cache: dict[str, Callable[[], float | None]] = {}
        self.ttft = Histogram("vinolm_time_to_first_token_seconds",
                              "Time from admission to the first generated token.", TTFT_BUCKETS)
        self.tpot = Histogram("vinolm_time_per_output_token_seconds",
                              "Mean time per generated token after the first, per request.", TPOT_BUCKETS)

    # -- the hooks ModelService calls -------------------------------------------------------
    def request_done(self, protocol: str, status: str) -> None:
        with self._lock:
            key = (protocol, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1

    def set_gauges(self, running: int, queued: int, model: str = "") -> None:
        with self._lock:
            self._running[model], self._queued[model] = running, queued

    def watch_kv_cache(self, model: str, read: Callable[[], float | None]) -> None:
        """Report ``read()`` as the model's KV-cache use until the model is unloaded."""
        with self._lock:
            self._kv_cache[model] = read

    def model_event(self, model: str, event: str) -> None:
        """The registry's ``loaded`` / ``unloaded`` / ``failed`` for ``model``."""
        with self._lock:
            key = (model, event)
            self._model_events[key] = self._model_events.get(key, 0) + 1
            if event in ("loaded", "unloaded"):
                self._loaded[model] = int(event == "loaded")
            if event == "unloaded":
                self._kv_cache.pop(model, None)  # its engine is closed: nothing left to read

    @property
    def running(self) -> int:
        return sum(self._running.values())

    @property
    def queued(self) -> int:
        return sum(self._queued.values())

    def observe(self, metrics: Metrics) -> None:
        """Count tokens of any request that ran, cancelled ones too; time only real output."""
        with self._lock:
            self.prompt_tokens += metrics.input_tokens
            self.generated_tokens += metrics.output_tokens
            self.draft_tokens += metrics.draft_tokens
            self.draft_accepted += metrics.draft_accepted
            if metrics.output_tokens > 0 and metrics.ttft > 0:
                self.ttft.observe(metrics.ttft)
            if metrics.output_tokens > 1 and metrics.tpot > 0:
                self.tpot.observe(metrics.tpot)

    # -- reading ----------------------------------------------------------------------------
    def requests(self, protocol: str, status: str) -> int:
        with self._lock:
            return self._requests.get((protocol, status), 0)

    def render(self) -> str:
        """The whole exposition, one consistent snapshot."""
        with self._lock:
            lines = [
                "# HELP vinolm_requests_total Finished inference requests by protocol and status code.",
                "# TYPE vinolm_requests_total counter",
            ]
            for (protocol, status), count in sorted(self._requests.items()):
                lines.append(f'vinolm_requests_total{{protocol="{_label(protocol)}",status="{_label(status)}"}} {count}')
            lines += _single("vinolm_prompt_tokens_total", "counter", "Prompt tokens processed.", self.prompt_tokens)
            lines += _single("vinolm_generated_tokens_total", "counter", "Tokens generated.", self.generated_tokens)
            lines += _single("vinolm_draft_tokens_total", "counter",
                             "Tokens proposed by speculative decoding (native engine).", self.draft_tokens)
            lines += _single("vinolm_draft_accepted_tokens_total", "counter",
                             "Proposed tokens the model chose too (native engine).", self.draft_accepted)
            lines += self.ttft.lines() + self.tpot.lines()
            lines += _single("vinolm_requests_running", "gauge", "Requests being generated now.", self.running)
            lines += _single("vinolm_requests_queued", "gauge", "Admitted requests waiting for a slot.", self.queued)
            lines += _per_model("vinolm_model_requests_running", "gauge", "Requests being generated now, per model.",
                                self._running)
            lines += _per_model("vinolm_model_requests_queued", "gauge", "Requests waiting for a slot, per model.",
                                self._queued)
            usage = {model: value for model, read in self._kv_cache.items() if (value := read()) is not None}
            lines += _per_model("vinolm_model_kv_cache_usage_ratio", "gauge",
                                "Fraction (0..1) of the KV-cache blocks used by the last engine step, per model.",
                                usage)
            lines += _per_model("vinolm_model_loaded", "gauge", "1 while the model is loaded.", self._loaded)
            for event, help_text in (("loaded", "Times the model was loaded."),
                                     ("unloaded", "Times the model was unloaded (idle, LRU, asked)."),
                                     ("failed", "Loads of the model that failed.")):
                counts = {model: n for (model, kind), n in self._model_events.items() if kind == event}
                lines += _per_model(f"vinolm_model_{event}_total", "counter", help_text, counts)
        return "\n".join(lines) + "\n"


def _per_model(name: str, kind: str, help_text: str, values: dict[str, int] | dict[str, float]) -> list[str]:
    named = {model: value for model, value in sorted(values.items()) if model}
    if not named:
        return []
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
            *(f'{name}{{model="{_label(model)}"}} {_number(value)}' for model, value in named.items())]


def _single(name: str, kind: str, help_text: str, value: float) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {_number(value)}"]


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(float(value))
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
