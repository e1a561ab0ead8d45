"""A WSGI application for uWSGI; each generation names itself in X-Version."""
import os

GEN = os.environ.get("HOTSWAP_GENERATION", "?")


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Version", "gen " + GEN)])
    return [b"ok\n"]
