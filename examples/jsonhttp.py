"""The example services' HTTP side (stdlib ``http.server``): a request handler that answers in
JSON, reads a JSON body, and logs nothing (the apps print their own lines)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def reply(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self) -> Any:
        """The request's JSON body; raises ValueError if it is not JSON."""
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
