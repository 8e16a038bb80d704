"""The event catalogue in docs/architecture.md is generated from the event contracts: it cannot drift."""

from kit.contracts import CONTRACTS
from scripts.event_catalogue import DOC, updated


def test_the_event_catalogue_is_what_the_contracts_say() -> None:
    text = DOC.read_text()
    assert updated(text) == text, "docs/architecture.md is out of date: run python -m scripts.event_catalogue"
    for event_type, model in CONTRACTS.items():
        assert f"| `{event_type}` | {model.producer} | {', '.join(model.consumers)} |" in text
