# A tiny HTTP server for the agent's tests. It listens on $PORT.
#   GET  /health  200, or 500 while a file "unhealthy" exists in the cwd
#   GET  /moved   307 to /health
#   GET  /env     the replica's environment and cwd as JSON
#   GET  /whoami  uid, gid and the whole environment as JSON
#   POST /ready   200 only for body {"q": 1}, JSON content type, X-Probe: yes
import http.server
import json
import os

port = int(os.environ["PORT"])


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            if os.path.exists("unhealthy"):
                return self.reply(500, "sick")
            return self.reply(200, "ok")
        if self.path == "/moved":
            self.send_response(307)
            self.send_header("Location", "/health")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        if self.path == "/env":
            keys = ["PORT", "CUDA_VISIBLE_DEVICES", "BATON_SERVICE",
                    "BATON_REPLICA_ID", "BATON_VERSION", "FOO",
                    "SKYPILOT_SERVE_REPLICA_ID", "SKYPILOT_NUM_GPUS_PER_NODE",
                    "SKYPILOT_NUM_NODES", "SKYPILOT_NODE_RANK", "SKYPILOT_NODE_IPS"]
            env = {k: os.environ.get(k) for k in keys}
            env["cwd"] = os.getcwd()
            return self.reply(200, json.dumps(env))
        if self.path == "/whoami":
            return self.reply(200, json.dumps({"uid": os.getuid(), "gid": os.getgid(), "env": dict(os.environ)}))
        self.reply(404, "not found")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        try:
            ok = json.loads(body) == {"q": 1}
        except ValueError:
            ok = False
        ok = ok and self.path == "/ready"
        ok = ok and self.headers.get("Content-Type") == "application/json"
        ok = ok and self.headers.get("X-Probe") == "yes"
        self.reply(200 if ok else 400, "ok" if ok else "bad probe")


print("serving on port", port, flush=True)
http.server.HTTPServer(("0.0.0.0", port), Handler).serve_forever()
