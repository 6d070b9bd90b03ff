"""OpenAI-compatible HTTP API on the SSJF router (FastAPI ingress).

Invariant: every HTTP request gets a JSON answer or an SSE stream ending in `data: [DONE]`; every
failure is OpenAI error JSON with a 4xx/5xx status; a client that disconnects cancels its request.
"""


import json
import logging
import time
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import TaskCancelledError
from ray.serve.exceptions import RequestCancelledError
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.protocol import RequestError
from deployments.ssjf_router import SSJFRouter

logger = logging.getLogger("ray.serve")
api = FastAPI(title="ssjf-serve", docs_url=None, redoc_url=None)


def _error_response(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _sse_data(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _envelope(parsed, kind: str, streaming: bool) -> dict[str, Any]:
    obj = {"completion": "text_completion", "chat": "chat.completion"}[kind]
    return {"id": f"{'cmpl' if kind == 'completion' else 'chatcmpl'}-{parsed.request_id}",
            "object": obj + (".chunk" if streaming and kind == "chat" else ""),
            "created": int(parsed.created_at_s or time.time()), "model": parsed.model}


def _choice(kind: str, text: str, finish_reason, streaming: bool) -> dict[str, Any]:
    if kind == "completion":
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    key = "delta" if streaming else "message"
    return {"index": 0, key: {"role": "assistant", "content": text}, "finish_reason": finish_reason}


def _full_response(parsed, kind: str, done: dict) -> dict[str, Any]:
    return {**_envelope(parsed, kind, False), "choices": [_choice(kind, done["text"], done["finish_reason"], False)],
            "usage": _usage(done), "timings": done.get("timings"), "ssjf": done.get("ssjf")}


def _chunk(parsed, kind: str, event: dict) -> dict[str, Any]:
    if event["type"] == "token":
        return {**_envelope(parsed, kind, True), "choices": [_choice(kind, event["text"], None, True)]}
    return {**_envelope(parsed, kind, True), "choices": [_choice(kind, "", event["finish_reason"], True)],
            "usage": _usage(event), "timings": event.get("timings"), "ssjf": event.get("ssjf")}


def _usage(done: dict) -> dict[str, int]:
    usage = done["usage"]
    return {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}



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
    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._serve_openai(request, "completion")

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._serve_openai(request, "chat")

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self._config.served_model_name, "object": "model",
                                            "created": 0, "owned_by": "ssjf-serve"}]}

    @api.get("/health")
    async def health(self) -> Response:
        ready = self._ready.is_set()
        return JSONResponse({"status": "ok" if ready else "starting"}, status_code=200 if ready else 503)

    @api.get("/v1/scheduler")
    async def scheduler_status(self) -> dict[str, Any]:
        return await self.status()

    async def _serve_openai(self, request: Request, kind: str) -> Response:
        try:
            body = await self._read_json(request)
        except RequestError as exc:
            self.observe_rejection(exc)
            return _error_response(exc)
        try:
            parsed = await self._parse(body, kind)
        except RequestError as exc:
            return _error_response(exc)
        events = self._run(parsed)
        try:  # admission errors (429, 503, 4xx) must be statuses, so wait for the first event
            first = await events.__anext__()
        except RequestError as exc:
            return _error_response(exc)
        if parsed.stream:
            return StreamingResponse(self._sse(parsed, kind, first, events), media_type="text/event-stream")
        event = first
        try:
            async for event in events:
                pass
        except RequestError as exc:
            return _error_response(exc)
        return JSONResponse(_full_response(parsed, kind, event))

    async def _read_json(self, request: Request) -> Any:
        limit = self._config.router.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"request body larger than {limit} bytes", code="body_too_large")
        raw = bytearray()
        async for chunk in request.stream():
            raw.extend(chunk)
            if len(raw) > limit:
                raise RequestError(413, f"request body larger than {limit} bytes", code="body_too_large")
        try:
            return json.loads(bytes(raw).decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(400, "request body is not valid UTF-8") from None
        except RecursionError:
            raise RequestError(400, "request body is nested too deeply") from None
        except json.JSONDecodeError as exc:
            raise RequestError(400, f"request body is not valid JSON: {exc}") from None
        except ValueError as exc:  # e.g. an integer literal over Python's 4,300-digit conversion limit
            raise RequestError(400, f"request body has an unusable value: {str(exc)[:200]}") from None

    async def _sse(self, parsed, kind: str, first: dict, events: AsyncIterator[dict]) -> AsyncIterator[str]:
        try:
            yield _sse_data(_chunk(parsed, kind, first))
            async for event in events:
                yield _sse_data(_chunk(parsed, kind, event))
        except RequestError as exc:
            yield _sse_data(exc.body())
        except Exception as exc:
            logger.exception("stream failed for request %s", parsed.request_id)
            yield _sse_data(RequestError(500, f"internal error: {type(exc).__name__}", type_="server_error").body())
        finally:
            await events.aclose()
        yield "data: [DONE]\n\n"
