"""The public pages behind the emailed links: server-rendered HTML that needs no JavaScript.

GET never changes anything (mail scanners follow links); answering and opting out are POSTs. The unsubscribe
POST also serves RFC 8058 one-click (`List-Unsubscribe=One-Click` in the body, which it does not need).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from kit.db import SessionDep, service_router
from kit.errors import Conflict, DomainError, NotFound, ValidationFailed
from survey import service
from survey.rendering import render_page
from survey.schemas import MAX_TEXT_ANSWER

router = service_router(tags=["survey pages"])

# Links carry a secret token: no referrer, no caching, no framing, nothing but inline styles.
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
}

_PAGES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "An HTML page."},
    404: {"content": {"text/html": {}}, "description": "Unknown link."},
    409: {"content": {"text/html": {}}, "description": "Already answered."},
    410: {"content": {"text/html": {}}, "description": "Expired link."},
    422: {"content": {"text/html": {}}, "description": "The form again, with what to fix."},
}


def _page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(render_page(template, **context), status_code=status, headers=_HEADERS)


def _refusal(error: DomainError) -> HTMLResponse:
    if isinstance(error, NotFound):
        heading, text = "This link doesn't work", "Please check that you opened the whole link from your email."
    elif isinstance(error, Conflict):
        heading, text = "Already answered", "This survey has already been answered with this link. Thank you!"
    elif isinstance(error, service.Gone):
        heading, text = "This link has expired", "Survey links work for 30 days. Thank you for your interest."
    else:
        raise error
    return _page("message.html", error.status, title=heading, heading=heading, text=text)


def _form(found: service.OpenInvitation, token: str, values: dict[str, str], errors: dict[str, str]) -> dict[str, Any]:
    return {
        "title": found.name,
        "survey_name": found.name,
        "reward_points": found.reward_points,
        "questions": found.questions,
        "values": values,
        "errors": errors,
        "max_text": MAX_TEXT_ANSWER,
        "unsubscribe_href": f"{token}/unsubscribe",
    }


@router.get(
    "/s/{token}/unsubscribe",
    operation_id="show_survey_unsubscribe_page",
    response_class=HTMLResponse,
    responses=_PAGES,
)
async def confirm_unsubscribe(token: str, session: SessionDep) -> HTMLResponse:
    try:
        await service.unsubscribe_target(session, token)
    except DomainError as error:
        return _refusal(error)
    return _page("unsubscribe.html", title="Unsubscribe", done=False)


@router.post(
    "/s/{token}/unsubscribe",
    operation_id="unsubscribe_from_surveys",
    response_class=HTMLResponse,
    responses=_PAGES,
)
async def unsubscribe(token: str, session: SessionDep) -> HTMLResponse:
    try:
        await service.unsubscribe(session, token)
    except DomainError as error:
        return _refusal(error)
    return _page("unsubscribe.html", title="Unsubscribed", done=True)


# After the unsubscribe routes: `{token:path}` also takes what no other route matched, so any malformed
# link gets the HTML 'not valid' page rather than a JSON 404.
@router.get("/s/{token:path}", operation_id="show_survey_page", response_class=HTMLResponse, responses=_PAGES)
async def show(token: str, session: SessionDep) -> HTMLResponse:
    try:
        found = await service.open_invitation(session, token)
    except DomainError as error:
        return _refusal(error)
    return _page("form.html", **_form(found, token, {}, {}))


@router.post("/s/{token:path}", operation_id="submit_survey_page", response_class=HTMLResponse, responses=_PAGES)
async def submit(token: str, request: Request, session: SessionDep) -> HTMLResponse:
    form = await request.form()
    values = {key[2:]: value for key, value in form.items() if key.startswith("q_") and isinstance(value, str)}
    try:
        created = await service.submit_response(session, token, list(values.items()), from_form=True)
    except ValidationFailed as invalid:
        found = await service.open_invitation(session, token)
        errors = {e["field"].removeprefix("answers."): e["message"] for e in invalid.extra["errors"]}
        return _page("form.html", 422, **_form(found, token, values, errors))
    except DomainError as error:
        return _refusal(error)
    found_name = (await service.get_survey(session, created.survey_id)).name
    return _page("thanks.html", title="Thank you", survey_name=found_name, reward_points=created.reward_points)
