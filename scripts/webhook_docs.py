"""Writes docs/webhooks.md from the webhook event models (kit.webhooks): every event type with a sample.

python -m scripts.webhook_docs          # rewrite docs/webhooks.md
python -m scripts.webhook_docs --check  # exit 1 if docs/webhooks.md is not what the models say
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kit.webhooks import EVENT_MODELS

DOC = Path(__file__).resolve().parents[1] / "docs" / "webhooks.md"

HEADER = """\
# Webhooks

Partner systems (a shop's back end, its CRM, its email tool) hear what happened in Reciprocity without polling:
the gateway POSTs each event to the endpoints registered for its type, signed under the
[Standard Webhooks](https://www.standardwebhooks.com/) specification, retried for at least 24 hours, and
logged. This page is generated from the event models (`libs/kit/kit/webhooks.py`) by
`python -m scripts.webhook_docs`; do not edit it by hand.

## Endpoints (admin)

```sh
curl -X POST "$BASE/v1/webhook-endpoints" -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \\
     -d '{"url": "https://crm.example.com/reciprocity", "events": ["points.earned", "tier.changed"]}'
# 201 {"id": "...", "url": "...", "events": [...], "active": true, ..., "secret": "whsec_..."}
```

- The `secret` (`whsec_` and the base64 of 32 random bytes) is shown in that answer only; keep it with the receiver.
- `GET /v1/webhook-endpoints`, `GET|PATCH|DELETE /v1/webhook-endpoints/{id}`: `PATCH` changes `url`, `events`,
  `description` and `active` (`false` pauses deliveries; `true` resumes them, also after an automatic disabling).
- `POST /v1/webhook-endpoints/{id}/secret-rotations` answers a new secret, shown once; for the next 24 hours
  (`previous_secret_expires_at`) every message carries two signatures, one per secret, so the receiver can switch
  over without dropping a message.
- `GET /v1/webhook-endpoints/{id}/deliveries?status=pending|delivered|failed`: newest first, each delivery with its
  `message_id` (the `webhook-id` header), status, next attempt and every attempt: time, HTTP status, latency,
  the first kilobyte of the answer or the connection error.
- `POST /v1/webhook-deliveries/{id}/retry` sends a delivery again now (same `webhook-id`, a fresh 24-hour retry
  window), whatever its state: after fixing a receiver, or when the partner lost what it received.

An endpoint receives the events that happen after it is registered, for the types it lists.

## Delivery

- `POST` to the endpoint's URL with `Content-Type: application/json` and the body
  `{"type": "...", "timestamp": "<RFC 3339, when it happened>", "data": {...}}`. `data` always holds `customer_id`.
- Headers: `webhook-id` (`msg_...`, the same on every attempt of one event: use it to skip duplicates),
  `webhook-timestamp` (Unix seconds of this attempt), `webhook-signature` (`v1,<base64>`, space-separated when
  there are two secrets).
- Success is a 2xx answer within 10 seconds. Anything else (another status, a redirect, which is never followed,
  a timeout, a refused connection) is retried after a random wait (full jitter) of 5 seconds on average,
  whose ceiling doubles with each attempt up to an hour, for at least 24 hours; then the delivery is `failed`
  (re-drivable).
- At least once: a message may arrive twice (a retry after an answer that was lost); order is not guaranteed.
- A slow or dead endpoint holds up nobody else: each endpoint has its own requests in flight (16 by default).
- An endpoint whose every attempt failed for 5 days (`WEBHOOK_DISABLE_AFTER_HOURS`) is disabled: `active` false,
  `disabled_at` and `disabled_reason` on the endpoint, its pending deliveries marked failed, an
  `webhooks.endpoint_disabled` error in the gateway's log and the metric `webhook_endpoints_disabled_total`.
- Addresses: the URL must be `http` or `https` and, unless `WEBHOOK_ALLOW_PRIVATE=true`, must not resolve to a
  loopback, private, link-local (cloud metadata included), shared or reserved address. It is checked when the
  endpoint is registered or changed, and the address is checked again for every connection (DNS can change).

## Verifying a signature

The signed content is `{webhook-id}.{webhook-timestamp}.{body}` (the body's exact bytes); the key is the
base64-decoded part of the secret after `whsec_`; the signature is HMAC-SHA256, base64-encoded, prefixed `v1,`.
Accept the message when any signature in the header matches, and refuse timestamps more than five minutes
away from your clock (replays).

Python (standard library only; `scripts/webhook_receiver.py` is a complete receiver to copy):

```python
import base64, hashlib, hmac, json, time


def verify(secret: str, headers: dict[str, str], body: bytes) -> dict:
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > 300:
        raise ValueError("stale timestamp")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest())
    for signature in headers["webhook-signature"].split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return json.loads(body)
    raise ValueError("bad signature")
```

Node.js (no dependencies):

```js
const crypto = require("crypto");

function verify(secret, headers, rawBody /* Buffer */) {
  const id = headers["webhook-id"], timestamp = headers["webhook-timestamp"];
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) throw new Error("stale timestamp");
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = crypto.createHmac("sha256", key)
    .update(Buffer.concat([Buffer.from(`${id}.${timestamp}.`), rawBody])).digest();
  for (const signature of headers["webhook-signature"].split(" ")) {
    const [version, value] = signature.split(",");
    const given = Buffer.from(value || "", "base64");
    if (version === "v1" && given.length === expected.length && crypto.timingSafeEqual(given, expected)) {
      return JSON.parse(rawBody.toString("utf8"));
    }
  }
  throw new Error("bad signature");
}
```

Check your code against the specification's test vector: secret `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`,
id `msg_p5jXN8AQM9LWM0D4loKWxJek`, timestamp `1614265330`, body `{"test": 2432232314}` give the signature
`v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=`.

Answer 2xx quickly and do slow work afterwards: the sender waits 10 seconds at most.

## Settings (gateway)

| setting | default | |
|---|---|---|
| `WEBHOOK_ALLOW_PRIVATE` | `false` | allow loopback and private addresses (development only) |
| `WEBHOOK_TIMEOUT_SECONDS` | `10` | one attempt's time limit |
| `WEBHOOK_RETRY_HOURS` | `24` | how long a delivery is retried before it is `failed` |
| `WEBHOOK_BACKOFF_BASE_SECONDS`, `WEBHOOK_BACKOFF_MAX_SECONDS` | `5`, `3600` | the backoff's first and longest wait |
| `WEBHOOK_DISABLE_AFTER_HOURS` | `120` | an endpoint failing this long without a success is disabled |
| `WEBHOOK_SECRET_OVERLAP_HOURS` | `24` | how long a rotated-out secret keeps signing |
| `WEBHOOK_PER_ENDPOINT`, `WEBHOOK_MAX_IN_FLIGHT` | `16`, `512` | requests in flight per endpoint, in all |
| `WEBHOOK_POLL_SECONDS` | `0.25` | how often the gateway looks for due deliveries |

Services send their events to the gateway at `GATEWAY_URL` (default `http://127.0.0.1:$GATEWAY_PORT`).

## Where events come from

Each event is written in the transaction of the change that caused it, into the producing service's outbox
(`kit.webhooks.publish_webhook`; the points ledger writes its own with a trigger), and relayed to the gateway,
which turns it into one delivery per subscribed endpoint. A change that rolls back sends nothing; a committed
one is sent even if a process restarts in between.

## Event types
"""


def render() -> str:
    parts = [HEADER]
    parts.append("\n| type | when |\n|---|---|\n")
    parts.extend(f"| [`{t}`](#{t.replace('.', '')}) | {m.description} |\n" for t, m in EVENT_MODELS.items())
    for event_type, model in EVENT_MODELS.items():
        data = model.model_validate(model.sample).model_dump(mode="json")
        body = {"type": event_type, "timestamp": "2026-12-03T09:30:00Z", "data": data}
        parts.append(f"\n### {event_type}\n\n{model.description}\n\n```json\n{json.dumps(body, indent=2)}\n```\n")
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the document is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            sys.exit(f"{DOC} is out of date: run python -m scripts.webhook_docs")
        return
    DOC.write_text(text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
