"""OpenAI-compatible HTTP API on the SSJF router (FastAPI ingress).

Invariant: every HTTP request gets a JSON answer or an SSE stream ending in `data: [DONE]`; every
failure is OpenAI error JSON with a 4xx/5xx status; with API keys configured no `/v1/*` route does
work for a request without a valid key; a client that disconnects cancels its request, even one that
sent Ray's `x-request-disconnect-disabled` header (see `http_edge`).
"""


import logging
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import TaskCancelledError
from ray.serve.exceptions import RequestCancelledError
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.auth import ApiKeys
from deployments.http_edge import ClientDisconnected, read_json_body, unless_disconnected
from deployments.openai_format import ResponseWriter, sse_data
from deployments.protocol import RequestError
from deployments.ssjf_router import SSJFRouter

logger = logging.getLogger("ray.serve")
api = FastAPI(title="ssjf-serve", docs_url=None, redoc_url=None)
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left; nobody reads the response


def _error_response(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _last_event(first: dict, events: AsyncIterator[dict]) -> dict:
    event = first
    async for event in events:
        pass
    return event


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error_response(RequestError(exc.status_code, str(exc.detail)))


@api.exception_handler(Exception)
async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, (TaskCancelledError, RequestCancelledError)):  # the client went away
        logger.info("client disconnected from %s", request.url.path)
    else:
        logger.exception("unhandled error on %s", request.url.path)
    return _error_response(RequestError(500, f"internal error: {type(exc).__name__}", type_="server_error"))


# Defined last: serve.ingress serializes the class, so every helper it uses must already exist.
@serve.ingress(api)
class HTTPRouter(SSJFRouter):
    async def __init__(self, engines: Any, config: dict):
        await super().__init__(engines, config)
        self._api_keys = ApiKeys.from_config(self._config.router)  # SSJF_API_KEYS is read here, at start

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._serve_openai(request, "completion")

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._serve_openai(request, "chat")

    @api.get("/v1/models")
    async def models(self, request: Request) -> Response:
        denied = self._deny(request)
        return denied or JSONResponse({"object": "list", "data": [
            {"id": self._config.served_model_name, "object": "model", "created": 0, "owned_by": "ssjf-serve"}]})

    @api.get("/health")
    async def health(self) -> Response:
        ready = self._ready.is_set()
        return JSONResponse({"status": "ok" if ready else "starting"}, status_code=200 if ready else 503)

    @api.get("/v1/scheduler")
    async def scheduler_status(self, request: Request) -> Response:
        return self._deny(request, admin=True) or JSONResponse(await self.status())

    def _deny(self, request: Request, admin: bool = False) -> Response | None:
        """The 401 response for a request without an allowed key, else None."""
        try:
            self._api_keys.authorize(request.headers.get("authorization"), admin)
        except RequestError as exc:
            self.observe_rejection(exc)
            return _error_response(exc)
        return None

    async def _serve_openai(self, request: Request, kind: str) -> Response:
        denied = self._deny(request)
        if denied is not None:
            return denied
        try:  # the body dict lives only until it is parsed, not through the queue wait
            parsed = await self._parse(await self._read_body(request), kind)
        except RequestError as exc:
            return _error_response(exc)
        writer = ResponseWriter(parsed, kind, self._config.router.include_ssjf_block)
        events = self._run(parsed, stream_tokens=parsed.stream)
        try:  # admission errors (429, 503, 4xx) must be statuses, so wait for the first event
            first = await unless_disconnected(request, events.__anext__())
            if parsed.stream:
                return StreamingResponse(self._sse(writer, first, events), media_type="text/event-stream")
            return JSONResponse(writer.full(await unless_disconnected(request, _last_event(first, events))))
        except RequestError as exc:
            return _error_response(exc)
        except ClientDisconnected:
            logger.info("client left before request %s was answered; cancelled", parsed.request_id)
            return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def _read_body(self, request: Request) -> Any:
        router = self._config.router
        try:
            return await read_json_body(request, router.max_request_bytes, router.body_read_timeout_s)
        except RequestError as exc:
            self.observe_rejection(exc)
            raise

    async def _sse(self, writer: ResponseWriter, first: dict, events: AsyncIterator[dict]) -> AsyncIterator[str]:
        try:
            for chunk in writer.chunks(first):
                yield sse_data(chunk)
            async for event in events:
                for chunk in writer.chunks(event):
                    yield sse_data(chunk)
        except RequestError as exc:
            yield sse_data(exc.body())
        except Exception as exc:
            logger.exception("stream failed")
            yield sse_data(RequestError(500, f"internal error: {type(exc).__name__}", type_="server_error").body())
        finally:
            await events.aclose()
        yield "data: [DONE]\n\n"
