"""The public survey page in headless Chromium at phone width: it renders as a form of radio buttons without
JavaScript, and a screenshot is kept in test-artifacts/ for a person to look at."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import Platform
from tests.support.browser import CHROMIUM, chromium
from tests.support.mail import Mailbox
from tests.survey.conftest import address, create_survey, invite, links, uid


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
async def test_survey_page_on_a_phone(
    platform: Platform, admin: httpx.AsyncClient, mailbox: Mailbox, artifacts: Path
) -> None:
    survey = await create_survey(admin, name="How was your order?", reward_points=50)
    email = address()
    assert (await invite(admin, survey["id"], uid(), email)).status_code == 201
    link, token = links((await mailbox.wait_for(email))[0])

    async with chromium(390, 844) as browser:
        await browser.goto(link)
        dom = await browser.html()
        assert "<form" in dom and "How was your order?" in dom
        assert dom.count('type="radio" name="q_nps"') == 11
        assert dom.count('type="radio" name="q_csat"') == 5
        assert "<script" not in dom

        screenshot = artifacts / "survey-form-390x844.png"
        screenshot.unlink(missing_ok=True)
        await browser.screenshot(screenshot, 390, mobile=True)
        assert screenshot.exists() and screenshot.stat().st_size > 10_000

        # The answered link, as the customer would see it when opening it again.
        async with platform.client(None) as public:
            answered = await public.post(f"/s/{token}", data={"q_nps": "10", "q_csat": "5"})
            assert answered.status_code == 200
        used = artifacts / "survey-used-link-390x844.png"
        await browser.goto(link)
        await browser.screenshot(used, 390, mobile=True)
        assert used.exists()
