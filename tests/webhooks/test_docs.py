import json
import re
import shutil
import subprocess
import time
from typing import Any

import pytest

from gateway.webhooks.signing import new_secret, sign
from kit.webhooks import EVENT_MODELS
from scripts.webhook_docs import DOC, render


def test_the_partner_documentation_is_generated_from_the_event_models() -> None:
    text = DOC.read_text()
    assert text == render(), "docs/webhooks.md is out of date: run python -m scripts.webhook_docs"
    for event_type in EVENT_MODELS:
        assert f"### {event_type}\n" in text


def _snippet(language: str) -> str:
    found = re.search(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert found, language
    return found.group(1)


def _signed_now() -> tuple[str, dict[str, str], bytes]:
    secret, body, timestamp = new_secret(), b'{"type": "points.earned", "data": {}}', int(time.time())
    headers = {
        "webhook-id": "msg_doc",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1,bm90IGl0 " + sign(secret, "msg_doc", timestamp, body),
    }
    return secret, headers, body


def test_the_documented_python_verifier_works() -> None:
    namespace: dict[str, Any] = {}
    exec(_snippet("python"), namespace)
    secret, headers, body = _signed_now()
    assert namespace["verify"](secret, headers, body) == json.loads(body)
    with pytest.raises(ValueError, match="bad signature"):
        namespace["verify"](new_secret(), headers, body)


def test_the_documented_node_verifier_works() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    secret, headers, body = _signed_now()
    script = _snippet("js") + (
        f"console.log(JSON.stringify(verify({json.dumps(secret)}, {json.dumps(headers)}, "
        f"Buffer.from({json.dumps(body.decode())}))));\n"
        f"try {{ verify({json.dumps(new_secret())}, {json.dumps(headers)}, Buffer.from('x')); }}"
        " catch (e) { console.log(e.message); }\n"
    )
    result = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.splitlines() == [json.dumps(json.loads(body), separators=(",", ":")), "bad signature"]
