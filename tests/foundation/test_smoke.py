import httpx

from tests.conftest import Platform


async def test_every_process_is_healthy_and_ready(platform: Platform) -> None:
    async with httpx.AsyncClient() as client:
        for name, url in platform.urls.items():
            assert (await client.get(url + "/healthz")).json() == {"status": "ok"}, name
            ready = await client.get(url + "/readyz")
            assert ready.status_code == 200, (name, ready.text)
            metrics = await client.get(url + "/metrics")
            assert "http_requests_total" in metrics.text
