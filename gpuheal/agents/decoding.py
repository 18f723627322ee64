"""gRPC services whose requests are decoded by the handler, so bytes that do not decode are INVALID_ARGUMENT.

The generated `add_*Servicer_to_server` functions hand gRPC the message's `FromString` as the
request deserializer; when it raises (corrupt bytes, a string field that is not UTF-8), gRPC
answers UNKNOWN with the Python exception in the status and logs a traceback. Here gRPC hands over
the raw bytes and the handler decodes them, answering INVALID_ARGUMENT that names the expected
message, as for any other malformed request. Methods, names and paths are the service
descriptor's, so clients generated from the `.proto` see no difference. Where `answered` is given, it
is told of every call's method and the name of the status code it ended with (for metrics).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

Context = grpc.aio.ServicerContext[Any, Any]
# Told of each call's method name and its status code's name (OK, NOT_FOUND, CANCELLED, …).
Answered = Callable[[str, str], None]


def add_decoding_servicer(
    server: grpc.aio.Server, service: ServiceDescriptor, servicer: object, answered: Answered | None = None
) -> None:
    """Serve every method of `service` from the same-named coroutine (or async generator) of `servicer`."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        if method.client_streaming:
            raise ValueError(f"{method.full_name}: client-streaming methods are not supported")
        request_type: type[Message] = message_factory.GetMessageClass(method.input_type)
        implementation = getattr(servicer, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _streaming(implementation, request_type, _telling(method.name, answered)),
                response_serializer=_serialize,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(implementation, request_type, _telling(method.name, answered)), response_serializer=_serialize
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
    implementation: Callable[[Any, Context], Awaitable[Message]],
    request_type: type[Message],
    tell: Callable[[BaseException | None, Context], None],
) -> Callable[[bytes, Context], Awaitable[Message]]:
    async def handle(raw: bytes, context: Context) -> Message:
        try:
            response = await implementation(await _decoded(raw, request_type, context), context)
        except BaseException as error:
            tell(error, context)
            raise
        tell(None, context)
        return response

    return handle


def _streaming(
    implementation: Callable[[Any, Context], AsyncIterator[Message]],
    request_type: type[Message],
    tell: Callable[[BaseException | None, Context], None],
) -> Callable[[bytes, Context], AsyncIterator[Message]]:
    async def handle(raw: bytes, context: Context) -> AsyncIterator[Message]:
        try:
            async for response in implementation(await _decoded(raw, request_type, context), context):
                yield response
        except BaseException as error:
            tell(error, context)
            raise
        tell(None, context)

    return handle


def _telling(method: str, answered: Answered | None) -> Callable[[BaseException | None, Context], None]:
    """Tells `answered` how a call of `method` ended: with `error` raised (None: it returned)."""

    def tell(error: BaseException | None, context: Context) -> None:
        if answered is None:
            return
        if error is None or isinstance(error, grpc.aio.AbortError):
            code = context.code()  # what abort (or set_code) left; None when the call went through
            answered(method, code.name if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK.name)
        elif isinstance(error, asyncio.CancelledError | GeneratorExit):  # the client went away
            answered(method, grpc.StatusCode.CANCELLED.name)
        else:  # gRPC answers UNKNOWN for what a handler raises
            answered(method, grpc.StatusCode.UNKNOWN.name)

    return tell
