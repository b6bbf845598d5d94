#!/usr/bin/python3
"""Stand-ins for the alert webhooks orch posts to, checking the documented shapes:

- ntfy (https://docs.ntfy.sh/publish/): POST to the topic URL, the message as the body,
  Title / Priority / Tags headers, `Authorization: Bearer <token>` when protected.
- gotify (https://gotify.net/api-docs): POST /message with a JSON body {title, message,
  priority}, the application token in `X-Gotify-Key`; 401 without it.
- json: any POST with a JSON body and an optional bearer token.

Every accepted request is appended to LOG as a JSON line. Usage: notifyapi.py PORT TOKEN LOG
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, TOKEN, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        record = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
        if self.path.startswith("/gotify/"):
            if self.headers.get("X-Gotify-Key") != TOKEN:
                return self.answer(401, {"error": "Unauthorized", "errorCode": 401,
                                         "errorDescription": "you need to provide a valid access token"})
            if self.path != "/gotify/message":
                return self.answer(404, {"error": "Not Found", "errorCode": 404})
            doc = json.loads(body)
            if not isinstance(doc.get("message"), str) or not doc["message"]:
                return self.answer(400, {"error": "Bad Request", "errorCode": 400,
                                         "errorDescription": "Field 'message' is required"})
            record["json"] = doc
            self.log(record)
            return self.answer(200, {"id": 1, "appid": 1, "message": doc["message"],
                                     "title": doc.get("title", ""), "priority": doc.get("priority", 0)})
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            return self.answer(403, {"code": 40301, "http": 403, "error": "forbidden"})
        if self.path.startswith("/ntfy/"):
            record["body"] = body.decode()
            self.log(record)
            return self.answer(200, {"id": "sPs71M8A2T", "event": "message",
                                     "topic": self.path.rsplit("/", 1)[-1],
                                     "message": record["body"], "title": self.headers.get("Title")})
        record["json"] = json.loads(body)
        self.log(record)
        return self.answer(200, {"ok": True})

    def log(self, record):
        with open(LOG, "a") as f:
            f.write(json.dumps(record) + "\n")


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
