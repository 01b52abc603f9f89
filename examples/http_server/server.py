#!/usr/bin/env python3
"""A tiny HTTP server for trying baton: the replica process of the examples.

Endpoints:
  GET  /          "hello from version $VERSION replica $BATON_REPLICA_ID"
  GET  /health    200 "ok" (the readiness probe)
  GET  /info      JSON: version, replica, pid
  GET  /slow?ms=N answers after N milliseconds (default 1000)
  GET  /stream    server-sent events: 5 events, 100 ms apart
  POST /echo      answers with the request body

It listens on --port (default $PORT, which the baton agent sets), logs one
line per request to stdout, and on SIGTERM or SIGINT stops accepting, lets
in-flight requests finish, and exits 0. Standard library only.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

VERSION = os.environ.get("VERSION", "1")
REPLICA = os.environ.get("BATON_REPLICA_ID", "?")

# Set once a shutdown signal arrives: answers then close their connection.
stopping = threading.Event()


def log(msg):
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}", flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "baton-example/1"
    # An idle keep-alive connection is closed after this many seconds, so a
    # shutdown never waits on it for long.
    timeout = 5

    def parse_request(self):
        # Called once a request line has arrived: the request is in flight
        # until handle_one_request returns.
        ok = super().parse_request()
        if ok:
            global inflight
            with inflight_lock:
                inflight += 1
            self.counted = True
        return ok

    def handle_one_request(self):
        self.counted = False
        try:
            super().handle_one_request()
        finally:
            if self.counted:
                global inflight
                with inflight_lock:
                    inflight -= 1
                    inflight_lock.notify_all()
            if stopping.is_set():
                self.close_connection = True

    def log_message(self, fmt, *args):
        log(f"{self.address_string()} {fmt % args} version={VERSION} replica={REPLICA}")

    def send_text(self, status, text, content_type="text/plain; charset=utf-8"):
        body = text.encode() if isinstance(text, str) else text
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if stopping.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/":
            self.send_text(200, f"hello from version {VERSION} replica {REPLICA}\n")
        elif url.path == "/health":
            self.send_text(200, "ok\n")
        elif url.path == "/info":
            info = {"version": VERSION, "replica": REPLICA, "pid": os.getpid()}
            self.send_text(200, json.dumps(info) + "\n", "application/json")
        elif url.path == "/slow":
            try:
                ms = int(parse_qs(url.query).get("ms", ["1000"])[0])
            except ValueError:
                self.send_text(400, "ms must be a whole number of milliseconds\n")
                return
            time.sleep(max(ms, 0) / 1000)
            self.send_text(200, f"slept {ms} ms in version {VERSION} replica {REPLICA}\n")
        elif url.path == "/stream":
            self.stream()
        else:
            self.send_text(404, "not found\n")

    def do_POST(self):
        if urlsplit(self.path).path != "/echo":
            self.send_text(404, "not found\n")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        ctype = self.headers.get("Content-Type", "application/octet-stream")
        self.send_text(200, body, ctype)

    def stream(self):
        # No Content-Length: the stream ends when the connection closes.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        for i in range(1, 6):
            event = {"n": i, "version": VERSION, "replica": REPLICA}
            self.wfile.write(f"id: {i}\ndata: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
            if i < 5:
                time.sleep(0.1)


class Server(ThreadingHTTPServer):
    # Idle keep-alive connections must not hold the exit back; requests in
    # flight are waited for in main() instead.
    daemon_threads = True
    block_on_close = False


inflight = 0
inflight_lock = threading.Condition()


def wait_for_inflight(timeout):
    deadline = time.monotonic() + timeout
    with inflight_lock:
        while inflight > 0 and time.monotonic() < deadline:
            inflight_lock.wait(0.05)
        return inflight


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8080),
                        help="port to listen on (default $PORT, else 8080)")
    args = parser.parse_args()

    server = Server((args.host, args.port), Handler)

    def on_signal(signum, _frame):
        if stopping.is_set():
            return
        stopping.set()
        log(f"received {signal.Signals(signum).name}; finishing in-flight requests")
        # shutdown() waits for serve_forever to return, so it must run on
        # another thread than the one serving.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log(f"listening on {args.host}:{args.port} version={VERSION} replica={REPLICA} pid={os.getpid()}")
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    left = wait_for_inflight(30)
    log(f"stopped ({left} requests still in flight)" if left else "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
