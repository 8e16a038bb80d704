"""Files under `.data/` are the platform user's alone: secrets, logs, and development mail whose links answer
surveys (and earn points). Checked with a permissive umask, so only explicit modes can pass."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.files import append_private, private_directory, write_private
from survey.mail import _write_all
from survey.settings import SurveySettings


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0o000)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_the_helpers_set_private_modes(tmp_path: Path) -> None:
    data = private_directory(tmp_path / ".data", 0o711)
    mail = private_directory(data / "mail")
    assert (mode(data), mode(mail)) == (0o711, 0o700)
    secret = data / "secrets.env"
    secret.write_text("OLD=1\n")
    secret.chmod(0o644)
    write_private(secret, b"NEW=1\n")
    assert (mode(secret), secret.read_bytes()) == (0o600, b"NEW=1\n")
    log = data / "gateway.log"
    with append_private(log) as file:
        file.write(b"one\n")
    with append_private(log) as file:
        file.write(b"two\n")
    assert (mode(log), log.read_bytes()) == (0o600, b"one\ntwo\n")
    assert sorted(p.name for p in data.iterdir()) == ["gateway.log", "mail", "secrets.env"]  # no leftovers


@pytest.mark.usefixtures("open_umask")
def test_development_mail_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "mail"
    invitation = uuid.uuid4()
    _write_all(directory, [(invitation, b"Subject: hi\r\n\r\nhttp://127.0.0.1/s/secret-token\r\n")])
    written = directory / f"{invitation}.eml"
    assert mode(directory) == 0o700
    assert mode(written) == 0o600
    assert b"secret-token" in written.read_bytes()


@pytest.mark.parametrize(
    ("host", "explicit", "expected"),
    [
        (None, None, False),
        ("127.0.0.1", None, False),
        ("127.0.0.53", None, False),
        ("::1", None, False),
        ("[::1]", None, False),
        ("localhost", None, False),
        ("LOCALHOST.", None, False),
        ("mail.localhost", None, False),
        ("smtp.example.com", None, True),
        ("10.0.0.5", None, True),
        ("localhost.example.com", None, True),
        ("smtp.example.com", False, False),
        ("127.0.0.1", True, True),
    ],
)
def test_starttls_is_on_by_default_beyond_loopback(host: str | None, explicit: bool | None, expected: bool) -> None:
    values: dict[str, object] = {"DATABASE_URL": "postgresql://x/y", "LOYALTY_INTERNAL_TOKEN": "t" * 16}
    if host is not None:
        values["SMTP_HOST"] = host
    if explicit is not None:
        values["SMTP_STARTTLS"] = explicit
    settings = SurveySettings(**values)  # type: ignore[arg-type]
    assert settings.use_starttls is expected
