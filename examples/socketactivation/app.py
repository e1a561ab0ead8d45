"""app: the WSGI application of examples/socketactivation.

It answers every request with its version, read once when a worker
imports it, the way new code reaches a server: write the version file
(or deploy new code), then kill -HUP hotswap.
"""

import os

_path = os.environ.get("APP_VERSION_FILE", "")
VERSION = open(_path).read().strip() if _path else "v1"
_BODY = ("version=%s\n" % VERSION).encode()


def app(environ, start_response):
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(_BODY))),
        ("X-Version", VERSION),
    ])
    return [_BODY]
