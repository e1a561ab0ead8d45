"""An ASGI application for uvicorn; each generation names itself in X-Version."""
import os

GEN = os.environ.get("HOTSWAP_GENERATION", "?").encode()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"x-version", b"gen " + GEN)]})
    await send({"type": "http.response.body", "body": b"ok\n"})
