"""A tiny web server on the port gaffer gives its instance ($PORT)."""

import http.server
import os

ordinal = int(os.environ.get("GAFFER_INSTANCE", "1"))
port = int(os.environ.get("PORT", "8081"))


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {os.environ.get('GAFFER_TEMPLATE')}.{ordinal}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Hello)
print(f"listening on http://127.0.0.1:{port}/")
server.serve_forever()
