"""The KServe v2 gRPC servicer (``inference.GRPCInferenceService``). Thin: convert, run, convert.

Errors are raised as VinolmError and turned into status codes by the interceptor, except
inside ModelStreamInfer, where - as Triton does - a failed request is answered with a
response carrying ``error_message`` (prefixed with the status name) and the stream stays
open for the next request.

ModelStreamInfer answers each request, in order, with the demo's sequence:

1. one response per generated piece of text: ``completion`` BYTES [N], where element
   ``i`` is the new text of prompt ``i`` and the others are empty, so a client appends
   element-wise without any bookkeeping;
2. one response with ``token_count`` INT32 [1] (the request's total, as the demo's
   clients print it) and ``token_counts`` INT32 [N] (per prompt);
3. an end response: output ``end_signal`` BYTES [1] (what the OVMS demo client waits for)
   and parameters ``end_of_sequence: true`` and ``triton_final_response: true``.

Every response echoes the request's ``id``. When the RPC ends early (client cancel,
disconnect, deadline) the running generations are cancelled within one token step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from vinolm.errors import VinolmError
from vinolm.server.grpc import convert
from vinolm.server.grpc._proto import grpc_predict_v2_pb2 as pb
from vinolm.server.grpc._proto import grpc_predict_v2_pb2_grpc as pb_grpc
from vinolm.server.grpc.interceptor import status_of
from vinolm.server.kserve import embeddings, serving
from vinolm.server.kserve.protocol import check_version, server_metadata_of
from vinolm.server.kserve.tensors import (
    COMPLETION,
    END_SIGNAL,
    INPUT,
    TOKEN_COUNT,
    TOKEN_COUNTS,
    OutputTensor,
    build_outputs,
    decode_prompts,
    requested_outputs,
    settings_from,
)
from vinolm.server.registry import Registry
from vinolm.server.service import ModelService, Ticket

PROTOCOL = "grpc"
END_PARAMETERS = {"end_of_sequence": True, "triton_final_response": True}


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, models: ModelService | Registry) -> None:
        self.registry = models if isinstance(models, Registry) else Registry.single(models)

    def _ready(self, name: str | None) -> bool:
        service = self.registry.loaded(name)
        return service is not None and service.ready()

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
                          ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._ready(None) and not self.registry.draining)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ModelReadyResponse:
        self.registry.resolve(request.name)
        check_version(request.name, request.version)
        return pb.ModelReadyResponse(ready=self._ready(request.name))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
                             ) -> pb.ServerMetadataResponse:
        meta = server_metadata_of()
        return pb.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=meta.extensions)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
                            ) -> pb.ModelMetadataResponse:
        check_version(request.name, request.version)
        meta = embeddings.metadata_for(self.registry, request.name)
        response = pb.ModelMetadataResponse(name=meta.name, versions=meta.versions, platform=meta.platform)
        for target, tensors in ((response.inputs, meta.inputs), (response.outputs, meta.outputs)):
            for t in tensors:
                target.add(name=t.name, datatype=t.datatype, shape=t.shape)
        return response

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ModelInferResponse:
        check_version(request.model_name, request.model_version)  # before a load, which takes seconds
        embedder = await self.registry.aservice(request.model_name)
        if embedder.embeds:  # an embedding model: text_input in, embedding out
            model = embedder.check_model(request.model_name or None)
            vectors = await embeddings.embed(embedder, convert.input_tensors(request),
                                             convert.parameters(request.parameters),
                                             [o.name for o in request.outputs], PROTOCOL)
            return convert.infer_response(model, request.id, vectors)  # type: ignore[arg-type]
        service, model, names, tickets = await self._submit(request, _cancel_when_done(context))
        done = await serving.complete(service, tickets)
        return convert.infer_response(model, request.id, build_outputs(done.completions, done.token_counts, names))

    async def ModelStreamInfer(self, requests: AsyncIterator[pb.ModelInferRequest],
                               context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ModelStreamInferResponse]:
        live = _cancel_when_done(context)
        async for request in requests:
            try:
                check_version(request.model_name, request.model_version)
                service, model, names, tickets = await self._submit(request, live)
                async with aclosing(self._stream(service, model, request.id, tickets, names)) as responses:
                    async for response in responses:
                        yield pb.ModelStreamInferResponse(infer_response=response)
            except VinolmError as exc:
                yield _stream_error(request, exc)

    async def _submit(self, request: pb.ModelInferRequest, live: list[Ticket]
                      ) -> tuple[ModelService, str, list[str], list[Ticket]]:
        """Check and admit one request (its version checked by the caller); its tickets become the
        RPC's live generations."""
        service = (await self.registry.aservice(request.model_name)).require("generate")
        model = service.check_model(request.model_name or None)
        prompts = decode_prompts(convert.input_tensors(request))
        settings = settings_from(convert.parameters(request.parameters))
        names = requested_outputs([output.name for output in request.outputs])
        tickets = service.submit_all(serving.to_requests(prompts, settings), PROTOCOL, INPUT)
        live[:] = tickets
        return service, model, names, tickets

    async def _stream(self, service: ModelService, model: str, request_id: str, tickets: list[Ticket],
                      names: list[str]) -> AsyncIterator[pb.ModelInferResponse]:
        """The text as it grows, then the counts, each only if asked for (all by default); the
        end signal always, since the stream's clients wait for it."""
        texts = [""] * len(tickets)
        async with aclosing(serving.merged_chunks(service, tickets)) as chunks:
            async for index, text in chunks:
                texts[index] = text
                if COMPLETION in names:
                    yield convert.infer_response(model, request_id, [OutputTensor(COMPLETION, "BYTES", list(texts))])
                texts[index] = ""
        counts = [name for name in names if name in (TOKEN_COUNT, TOKEN_COUNTS)]
        if counts:
            yield convert.infer_response(model, request_id, build_outputs([], serving.token_counts(tickets), counts))
        end = [OutputTensor(END_SIGNAL, "BYTES", [""])]
        yield convert.infer_response(model, request_id, end, END_PARAMETERS)


def _cancel_when_done(context: grpc.aio.ServicerContext) -> list[Ticket]:
    """A holder for the RPC's running tickets, all cancelled when the RPC terminates.

    Cancellation of the handler task already stops them; this callback also covers a
    response stream abandoned while suspended, which no exception would reach.
    """
    live: list[Ticket] = []

    def cancel(_: object) -> None:
        for ticket in live:
            ticket.generation.cancel()

    context.add_done_callback(cancel)
    return live


def _stream_error(request: pb.ModelInferRequest, exc: VinolmError) -> pb.ModelStreamInferResponse:
    code = status_of(exc)
    return pb.ModelStreamInferResponse(
        error_message=f"{code.name}: {exc.message}",
        infer_response=pb.ModelInferResponse(model_name=request.model_name, id=request.id),
    )
