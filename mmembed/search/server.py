"""The HTTP app of `mmembed serve`: a JSON search API (text, image upload, both), thumbnails,
the indexed files themselves (only inside the indexed roots), and a one-page web UI.

Knows nothing of how the index was built; it needs a Searcher. Requires the `serve` extra."""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations at
# runtime, and they name classes imported inside create_app.
import ipaddress
import os
import secrets
import time
import urllib.parse
from importlib import resources
from typing import Any

from mmembed.data.images import ImageLoadError
from mmembed.search import DEFAULT_K
from mmembed.search.library import LibraryError
from mmembed.search.query import QueryError, Searcher
from mmembed.search.thumbs import decode_upload

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
BODY_TIMEOUT_S = 30.0  # a request body not complete by then is refused (half-sent uploads)
# Threads that decode uploaded images, off the event loop: at most half the cores (at least
# one, at most two), so that large uploads leave CPU for everyone else's searches.
DECODE_WORKERS = min(2, max(1, (os.cpu_count() or 2) // 2))
MAX_UPLOADS = 4  # image searches in flight at once; more are told to retry
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def _import_fastapi():
    try:
        import fastapi
        import fastapi.responses
    except ImportError:
        raise SystemExit("mmembed serve needs FastAPI: pip install 'mmembed[serve]'") from None
    return fastapi


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413 and a clear message,
    by Content-Length up front and by counting for chunked bodies (buffered, then replayed)."""

    def __init__(self, app, max_bytes: int, timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def _refuse(self, send, status: int, detail: str) -> None:
        import json

        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit_mb = self.max_bytes / (1024 * 1024)
        too_large = (
            f"upload too large: the limit is {limit_mb:g} MiB; choose a smaller "
            "image or start the server with a larger --max-upload-mb"
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await self._refuse(send, 400, "malformed Content-Length header")
            if n > self.max_bytes:
                return await self._refuse(send, 413, too_large)
        import asyncio

        body = bytearray()
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.001))
            except asyncio.TimeoutError:
                return await self._refuse(
                    send, 408, f"request body not received within {self.timeout_s:g} s"
                )
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await self._refuse(send, 413, too_large)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SecurityHeaders:
    """ASGI middleware adding nosniff and no-referrer to every response (pure ASGI: cheap)."""

    HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [h for h in self.HEADERS if h[0] not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def _safe_name(filename: str | None) -> str:
    """An upload's file name as error messages show it: printable, at most 80 characters."""
    name = "".join(c for c in (filename or "upload") if c.isprintable()) or "upload"
    return name if len(name) <= 80 else name[:79] + "…"


def _decode(data: bytes, name: str):
    return decode_upload(data, name=name)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(
    searcher: Searcher,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    allowed_hosts: list[str] | None = None,
    reload_interval: float | None = 1.0,
    max_uploads: int = MAX_UPLOADS,
    body_timeout_s: float = BODY_TIMEOUT_S,
):
    """The FastAPI app over ``searcher``. ``allowed_hosts`` (Host header values) guards a
    loopback server against DNS rebinding; None allows any Host. A re-run of `mmembed index`
    is picked up within ``reload_interval`` seconds (None: never).

    Uploaded images are decoded in a pool of ``DECODE_WORKERS`` threads, never on the event
    loop; at most ``max_uploads`` image searches run at once (more get 503 and Retry-After),
    and a request body must arrive within ``body_timeout_s``."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    fastapi = _import_fastapi()
    from fastapi import File, Form, HTTPException, Query, Request, UploadFile
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

    app = fastapi.FastAPI(
        title="mmembed search",
        version="1",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    page = resources.files("mmembed.search").joinpath("static/index.html").read_text("utf-8")

    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes, timeout_s=body_timeout_s)
    decode_pool = ThreadPoolExecutor(DECODE_WORKERS, thread_name_prefix="mmembed-decode")
    uploads = {"in_flight": 0}  # touched only on the event loop: no lock needed
    app.add_middleware(SecurityHeaders)

    def fresh() -> None:
        if reload_interval is not None:
            searcher.refresh(min_interval=reload_interval)

    def _servable(path: str) -> bool:
        try:
            searcher.library.resolve_file(path)
        except (PermissionError, FileNotFoundError):
            return False
        return True

    def run(text: str | None, image: Any, k: int) -> dict[str, Any]:
        fresh()
        t0 = time.perf_counter()
        try:
            hits = searcher.search(text, image, k=k)
        except QueryError as e:
            raise HTTPException(400, str(e)) from None
        except LibraryError as e:  # re-indexed with a model this server cannot switch to
            raise HTTPException(409, str(e)) from None
        took = (time.perf_counter() - t0) * 1000
        results = []
        for h in hits:
            j = h.to_json()
            e = h.entry
            shown = e.image if e.image and _servable(e.image) else None
            # ?v= changes with the content, so a browser never shows a stale thumbnail
            thumb = f"/api/thumb/{urllib.parse.quote(e.did, safe='')}?v={e.key[:12]}"
            j["thumb"] = thumb if shown else None
            j["file"] = "/api/file?path=" + urllib.parse.quote(shown or e.source, safe="")
            results.append(j)
        return {
            "query": {"text": text or None, "image": image is not None},
            "k": k,
            "took_ms": round(took, 2),
            "results": results,
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        csp = (
            f"default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
            f"script-src 'nonce-{nonce}'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'"
        )
        return HTMLResponse(
            page.replace("<script>", f'<script nonce="{nonce}">'),
            headers={"Content-Security-Policy": csp},
        )

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        fresh()
        data = searcher.library.info()
        data["max_upload_bytes"] = max_upload_bytes
        data["batching"] = searcher.batch_stats()
        return data

    @app.get("/api/search")
    def search_get(
        q: str = Query(..., description="query text"), k: int = Query(DEFAULT_K, ge=1, le=1000)
    ) -> dict[str, Any]:
        return run(q, None, k)

    @app.post("/api/search")
    async def search_post(
        request: Request,
        q: str | None = Form(None),
        k: int = Form(DEFAULT_K, ge=1, le=1000),
        image: UploadFile | None = File(None),
    ) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            raise HTTPException(
                415,
                f"POST /api/search takes multipart/form-data (fields q, k, image), not "
                f"{ctype or 'a body without a Content-Type'}; for text alone use "
                "GET /api/search?q=TEXT",
            )
        if image is None or not (image.filename or image.size):
            return JSONResponse(await run_in_threadpool(run, q, None, k))
        if uploads["in_flight"] >= max_uploads:
            raise HTTPException(
                503,
                f"{max_uploads} image searches are already running; retry in a moment",
                headers={"Retry-After": "1"},
            )
        uploads["in_flight"] += 1
        try:
            data = await image.read()
            name = _safe_name(image.filename)
            loop = asyncio.get_running_loop()
            try:
                pil = await loop.run_in_executor(decode_pool, _decode, data, name)
            except ImageLoadError as e:
                raise HTTPException(400, str(e)) from None
            return JSONResponse(await run_in_threadpool(run, q, pil, k))
        finally:
            uploads["in_flight"] -= 1

    @app.get("/api/thumb/{did}")
    def thumb(did: str) -> Response:
        fresh()
        try:
            data = searcher.thumbnail(did)
        except KeyError:
            raise HTTPException(404, f"no image item with id {did!r}") from None
        except PermissionError as e:
            raise HTTPException(403, str(e)) from None
        except (FileNotFoundError, ImageLoadError) as e:
            raise HTTPException(404, str(e)) from None
        return Response(
            data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
        )

    @app.get("/api/file")
    def file(
        path: str = Query(..., description="absolute path of an indexed file"),
    ) -> FileResponse:
        fresh()
        try:
            real = searcher.library.resolve_file(path)
        except PermissionError as e:
            raise HTTPException(403, str(e)) from None
        except FileNotFoundError as e:
            raise HTTPException(404, str(e)) from None
        return FileResponse(real, filename=real.name, content_disposition_type="inline")

    return app


def serve(
    searcher: Searcher,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    log_level: str = "info",
) -> None:
    """Run the app under uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise SystemExit("mmembed serve needs uvicorn: pip install 'mmembed[serve]'") from None
    hosts = None
    if is_loopback(host):
        hosts = ["127.0.0.1", "localhost", "[::1]", "::1"]
    app = create_app(searcher, max_upload_bytes=max_upload_bytes, allowed_hosts=hosts)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
