"""A webhook receiver for Reciprocity's events that a partner can copy: Python's standard library only.

    WEBHOOK_SECRET=whsec_... python webhook_receiver.py --port 9000

It verifies every request by the Standard Webhooks rules (signature over "{id}.{timestamp}.{body}" with the
secret's base64-decoded bytes, any of the space-separated `v1,` signatures may match, timestamp within five
minutes), answers 401 to anything that does not verify, skips a `webhook-id` it already handled (retries
reuse it), prints each event and answers 204 quickly: do slow work after answering (the sender waits 10 s).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOLERANCE_SECONDS = 5 * 60
MAX_BODY_BYTES = 1024 * 1024


class InvalidWebhook(Exception):
    pass


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> Any:
    """The event (parsed JSON) when the request is authentic and fresh; else InvalidWebhook."""
    headers = {k.lower(): v for k, v in headers.items()}
    try:
        message_id = headers["webhook-id"]
        timestamp = int(headers["webhook-timestamp"])
        signatures = headers["webhook-signature"]
    except (KeyError, ValueError):
        raise InvalidWebhook("missing or malformed webhook headers") from None
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE_SECONDS:
        raise InvalidWebhook("timestamp outside the tolerance (a replay?)")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in signatures.split():
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return json.loads(body)
    raise InvalidWebhook("no signature matches")


class _Seen:
    """The ids handled recently: a retry of one already handled is acknowledged and skipped."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self.ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, message_id: str) -> bool:
        if message_id in self.ids:
            return False
        self.ids[message_id] = None
        if len(self.ids) > self.size:
            self.ids.popitem(last=False)
        return True


def make_handler(secret: str, seen: _Seen) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self.send_error(413)
                return
            body = self.rfile.read(length)
            try:
                event = verify(secret, dict(self.headers.items()), body)
            except InvalidWebhook as exc:
                self.send_response(401)
                self.end_headers()
                self.wfile.write(str(exc).encode())
                return
            if seen.first_time(self.headers["webhook-id"]):
                print(json.dumps({"id": self.headers["webhook-id"], **event}), flush=True)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    secret = os.environ.get("WEBHOOK_SECRET", "")
    if not secret.startswith("whsec_"):
        sys.exit("Set WEBHOOK_SECRET to the endpoint's secret (whsec_...).")
    server = ThreadingHTTPServer((args.host, args.port), make_handler(secret, _Seen()))
    print(f"listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
