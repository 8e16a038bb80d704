"""Jinja2 templates shipped in the package: the invitation email (text and HTML) and the public pages."""

from __future__ import annotations

import email.policy
import email.utils
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

__all__ = ["email_domain", "invitation_message", "render_page"]

templates = Environment(
    loader=PackageLoader("survey", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_page(name: str, **context: Any) -> str:
    return templates.get_template(name).render(**context)


def email_domain(sender: str) -> str:
    address = email.utils.parseaddr(sender)[1]
    return address.rpartition("@")[2] or "localhost"


def invitation_message(
    *,
    invitation_id: str,
    sender: str,
    recipient: str,
    survey_name: str,
    survey_url: str,
    unsubscribe_url: str,
    reward_points: int | None,
    expires_at: datetime,
    sent_at: datetime,
) -> bytes:
    """The complete RFC 5322 message, rendered once when the invitation is made."""
    context = {
        "survey_name": survey_name,
        "survey_url": survey_url,
        "unsubscribe_url": unsubscribe_url,
        "reward_points": reward_points,
        "expires_on": expires_at.strftime("%d %B %Y"),
    }
    message = EmailMessage(policy=email.policy.SMTP)
    message["Subject"] = f"{survey_name}: a minute of your time?"
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = email.utils.format_datetime(sent_at)
    # A stable id per invitation lets a receiving system recognise a duplicate from the at-least-once window.
    message["Message-ID"] = f"<{invitation_id}@{email_domain(sender)}>"
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(templates.get_template("invitation.txt").render(**context))
    message.add_alternative(templates.get_template("invitation_email.html").render(**context), subtype="html")
    return message.as_bytes()
