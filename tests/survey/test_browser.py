"""The public survey page in headless Chromium at phone width: it renders as a form of radio buttons without
JavaScript, and a screenshot is kept in test-artifacts/ for a person to look at."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import Platform
from tests.support.mail import Mailbox
from tests.survey.conftest import address, create_survey, invite, links, uid

CHROMIUM = shutil.which("chromium")


async def chromium(*args: str) -> bytes:
    """Runs the browser without blocking the event loop that serves the pages."""
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
            f"--user-data-dir={profile}",
            "--window-size=390,844",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return out


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
async def test_survey_page_on_a_phone(
    platform: Platform, admin: httpx.AsyncClient, mailbox: Mailbox, artifacts: Path
) -> None:
    survey = await create_survey(admin, name="How was your order?", reward_points=50)
    email = address()
    assert (await invite(admin, survey["id"], uid(), email)).status_code == 201
    link, token = links((await mailbox.wait_for(email))[0])

    dom = (await chromium("--dump-dom", link)).decode()
    assert "<form" in dom and "How was your order?" in dom
    assert dom.count('type="radio" name="q_nps"') == 11
    assert dom.count('type="radio" name="q_csat"') == 5
    assert "<script" not in dom

    screenshot = artifacts / "survey-form-390x844.png"
    screenshot.unlink(missing_ok=True)
    await chromium(f"--screenshot={screenshot}", link)
    assert screenshot.exists() and screenshot.stat().st_size > 10_000

    # The answered link, as the customer would see it when opening it again.
    async with platform.client(None) as public:
        answered = await public.post(f"/s/{token}", data={"q_nps": "10", "q_csat": "5"})
        assert answered.status_code == 200
    used = artifacts / "survey-used-link-390x844.png"
    await chromium(f"--screenshot={used}", link)
    assert used.exists()
