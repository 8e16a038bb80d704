"""A small driver for Debian's headless Chromium over the DevTools protocol (a websocket the browser opens on
loopback): navigate, fill and submit forms, read the DOM, list every URL the page requested, take screenshots.
Nothing to download: the protocol speaks JSON over the `websockets` package the suite already has."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CHROMIUM = shutil.which("chromium")
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class Browser:
    def __init__(self, connection: ClientConnection, session_id: str) -> None:
        self._connection = connection
        self._session_id = session_id
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._load = asyncio.Event()
        self.requested: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self._connection:
            message = json.loads(raw)
            if "id" in message and message["id"] in self._pending:
                self._pending.pop(message["id"]).set_result(message)
            elif message.get("method") == "Page.loadEventFired":
                self._load.set()
            elif message.get("method") == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])

    async def send(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[number] = future
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session_id
        await self._connection.send(json.dumps(message))
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})  # type: ignore[no-any-return]

    async def _until_loaded(self, action: Any) -> None:
        self._load.clear()
        await action
        await asyncio.wait_for(self._load.wait(), 30)

    async def goto(self, url: str) -> None:
        await self._until_loaded(self.send("Page.navigate", url=url))

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    async def html(self) -> str:
        return str(await self.evaluate("document.documentElement.outerHTML"))

    async def url(self) -> str:
        return str(await self.evaluate("location.href"))

    async def submit(self, form_selector: str, values: dict[str, str]) -> None:
        """Fills the named fields of the form and clicks its submit button, as a person would."""
        script = f"""(() => {{
            const form = document.querySelector({json.dumps(form_selector)});
            if (!form) throw new Error("no form " + {json.dumps(form_selector)});
            for (const [name, value] of Object.entries({json.dumps(values)})) {{
                const field = form.elements[name];
                if (!field) throw new Error("no field " + name);
                if (field.type === "checkbox") field.checked = value === "on"; else field.value = value;
            }}
            form.querySelector('button[type="submit"], button:not([type])').click();
        }})()"""
        await self._until_loaded(self.evaluate(script))

    async def cookies(self) -> list[dict[str, Any]]:
        return list((await self.send("Network.getCookies"))["cookies"])

    async def screenshot(self, path: Path, width: int, mobile: bool) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=800, deviceScaleFactor=1, mobile=mobile
        )
        height = int(await self.evaluate("document.documentElement.scrollHeight"))
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=min(height, 6000),
            deviceScaleFactor=1,
            mobile=mobile,
        )
        shot = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))
        await self.send("Emulation.clearDeviceMetricsOverride")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@contextlib.asynccontextmanager
async def chromium(width: int = 1280, height: int = 900) -> AsyncIterator[Browser]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        process = await asyncio.create_subprocess_exec(
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stderr is not None
            endpoint = None
            async with asyncio.timeout(30):
                while endpoint is None:
                    line = (await process.stderr.readline()).decode()
                    if not line:
                        raise RuntimeError("chromium exited before opening its DevTools endpoint")
                    if found := _LISTENING.search(line):
                        endpoint = found.group(1)
            drain = asyncio.create_task(process.stderr.read())
            async with connect(endpoint, max_size=None) as connection:
                bootstrap = Browser(connection, "")
                target = await bootstrap.send("Target.createTarget", session=False, url="about:blank")
                attached = await bootstrap.send(
                    "Target.attachToTarget", session=False, targetId=target["targetId"], flatten=True
                )
                bootstrap._session_id = attached["sessionId"]
                await bootstrap.send("Page.enable")
                await bootstrap.send("Network.enable")
                try:
                    yield bootstrap
                finally:
                    bootstrap._reader.cancel()
            drain.cancel()
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()
