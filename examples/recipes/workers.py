# A single-threaded Python HTTP server, one per core under hotswap --workers:
# each worker serves its own SO_REUSEPORT socket, inherited as fd 3.
#
#   hotswap --workers auto --cpu-affinity -l tcp://127.0.0.1:8080 \
#       --ready http://127.0.0.1:8080/ -- python3 workers.py
import http.server
import os
import socket

GEN = os.environ.get("HOTSWAP_GENERATION", "?")
WORKER = os.environ.get("HOTSWAP_WORKER", "?")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"gen {GEN} worker {WORKER} pid {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("X-Version", "gen " + GEN)
        self.send_header("X-Worker", WORKER)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


srv = http.server.HTTPServer(("", 0), Handler, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)  # LISTEN_FDS=1: the worker's own socket
srv.serve_forever()
