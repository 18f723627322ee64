"""gRPC services whose requests are decoded by the handler, so bytes that do not decode are INVALID_ARGUMENT.

The generated `add_*Servicer_to_server` functions hand gRPC the message's `FromString` as the
request deserializer; when it raises (corrupt bytes, a string field that is not UTF-8), gRPC
answers UNKNOWN with the Python exception in the status and logs a traceback. Here gRPC hands over
the raw bytes and the handler decodes them, answering INVALID_ARGUMENT that names the expected
message, as for any other malformed request. Methods, names and paths are the service
descriptor's, so clients generated from the `.proto` see no difference.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

Context = grpc.aio.ServicerContext[Any, Any]


def add_decoding_servicer(server: grpc.aio.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Serve every method of `service` from the same-named coroutine (or async generator) of `servicer`."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        if method.client_streaming:
            raise ValueError(f"{method.full_name}: client-streaming methods are not supported")
        request_type: type[Message] = message_factory.GetMessageClass(method.input_type)
        implementation = getattr(servicer, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _streaming(implementation, request_type), response_serializer=_serialize
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(implementation, request_type), response_serializer=_serialize
            )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def _serialize(response: Message) -> bytes:
    return response.SerializeToString()


async def _decoded(raw: bytes, request_type: type[Message], context: Context) -> Message:
    try:
        return request_type.FromString(raw)
    except DecodeError as error:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid {request_type.DESCRIPTOR.full_name}: {error}",
        )


def _unary(
    implementation: Callable[[Any, Context], Awaitable[Message]], request_type: type[Message]
) -> Callable[[bytes, Context], Awaitable[Message]]:
    async def handle(raw: bytes, context: Context) -> Message:
        return await implementation(await _decoded(raw, request_type, context), context)

    return handle


def _streaming(
    implementation: Callable[[Any, Context], AsyncIterator[Message]], request_type: type[Message]
) -> Callable[[bytes, Context], AsyncIterator[Message]]:
    async def handle(raw: bytes, context: Context) -> AsyncIterator[Message]:
        async for response in implementation(await _decoded(raw, request_type, context), context):
            yield response

    return handle
