"""The fake SendGrid v3 API: `POST /v3/mail/send` (JSON, Bearer auth) and the scope lookup
`outage doctor` checks credentials with. It validates a send the way SendGrid does, in the parts
that catch adapter bugs, and records one message per recipient with its placeholders filled."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Iterable
from email.message import Message as HeaderMap
from typing import Any

from dispatcher.sandbox.replies import Reply, json_reply
from dispatcher.sandbox.state import SandboxState, new_record

CHANNEL = "email"
SEND_PATH = re.compile(r"^/v3/mail/send$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

Problems = list[tuple[str, str | None]]  # (message, field) pairs, as SendGrid lists them


def errors(status: int, problems: Iterable[tuple[str, str | None]]) -> Reply:
    document = [{"message": message, "field": field, "help": None} for message, field in problems]
    return json_reply(status, {"errors": document})


def error(status: int, message: str) -> Reply:
    return errors(status, [(message, None)])


def whoami(state: SandboxState, path: str, headers: HeaderMap) -> Reply | None:
    """The scope lookup, or None for another path; injected faults apply to it too."""
    if path != "/v3/scopes":
        return None
    if not (headers.get("Authorization") or "").strip().startswith("Bearer "):
        return error(401, "authorization required")
    return state.take_fault(CHANNEL, error) or json_reply(200, {"scopes": ["mail.send"]})


def send(state: SandboxState, path: str, headers: HeaderMap, body: bytes) -> Reply:
    """A mail send: validated, recorded per recipient, answered 202 with an X-Message-Id."""
    auth = headers.get("Authorization") or ""
    if not auth.startswith("Bearer ") or not auth[len("Bearer ") :].strip():
        return error(401, "The provided authorization grant is invalid, expired, or revoked")
    if (fault := state.take_fault(CHANNEL, error)) is not None:
        return fault
    try:
        document = json.loads(body)
    except ValueError:
        return error(400, "Bad Request")
    problems = _mail_problems(document)
    if problems:
        return errors(400, problems)
    recipients = list(_mail_recipients(document))
    bad = [(f"{field}.email", email) for field, email, _ in recipients if state.fails(email)]
    if bad:
        return errors(400, [("Does not contain a valid address.", f) for f, _ in bad])
    message_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    content = {part["type"]: part["value"] for part in document.get("content") or []}
    top_headers = document.get("headers") or {}
    top_args = document.get("custom_args") or {}
    records = []
    for _, email, personalization in recipients:
        # SendGrid fills each personalization's placeholders into subject and content.
        fill = _substituter(personalization.get("substitutions") or {})
        meta = {
            "from": document["from"]["email"],
            "custom_args": {**top_args, **(personalization.get("custom_args") or {})},
            "mail_headers": {**top_headers, **(personalization.get("headers") or {})},
        }
        records.append(
            new_record(
                CHANNEL,
                email,
                headers,
                message_id,
                subject=fill(personalization.get("subject") or document.get("subject")),
                body=fill(content.get("text/plain")),
                html=fill(content.get("text/html")),
                meta=meta,
            )
        )
    state.record(records)
    return Reply(202, b"", {"X-Message-Id": message_id})


def _mail_recipients(document: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """(field path, address, personalization) for every to/cc/bcc of a validated request."""
    for index, personalization in enumerate(document["personalizations"]):
        for kind in ("to", "cc", "bcc"):
            for position, recipient in enumerate(personalization.get(kind) or []):
                field = f"personalizations.{index}.{kind}.{position}"
                yield field, recipient["email"], personalization


def _substituter(substitutions: dict[str, Any]) -> Callable[[str | None], str | None]:
    """SendGrid's legacy substitutions: every key found in subject or content is replaced."""

    def fill(text: str | None) -> str | None:
        if text is None:
            return None
        for key, value in substitutions.items():
            text = text.replace(str(key), str(value))
        return text

    return fill


def _mail_problems(document: object) -> Problems:
    """SendGrid's v3 validation, the parts that catch adapter bugs: (message, field) pairs."""
    if not isinstance(document, dict):
        return [("The request body must be a JSON object.", None)]
    problems: Problems = []
    personalizations = document.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        message = (
            "The personalizations field is required and must have at least one personalization."
        )
        problems.append((message, "personalizations"))
        personalizations = []
    elif len(personalizations) > 1000:
        message = "The personalizations field cannot have more than 1000 personalizations."
        problems.append((message, "personalizations"))
    seen: set[str] = set()
    has_subject = bool(document.get("subject"))
    for index, personalization in enumerate(personalizations):
        field = f"personalizations.{index}"
        if not isinstance(personalization, dict):
            problems.append(("Each personalization must be an object.", field))
            continue
        if not isinstance(personalization.get("to"), list) or not personalization["to"]:
            message = (
                "The to array is required for all personalization objects, and must have at "
                "least one email object with a valid email address."
            )
            problems.append((message, f"{field}.to"))
        for kind in ("to", "cc", "bcc"):
            recipients = personalization.get(kind) or []
            if not isinstance(recipients, list):
                problems.append((f"The {kind} field must be an array.", f"{field}.{kind}"))
                continue
            for position, recipient in enumerate(recipients):
                email = recipient.get("email") if isinstance(recipient, dict) else None
                where = f"{field}.{kind}.{position}.email"
                if not isinstance(email, str) or not _EMAIL.match(email):
                    problems.append(("Does not contain a valid address.", where))
                elif email.lower() in seen:
                    problems.append((f"Each email address should be unique: {email}.", where))
                else:
                    seen.add(email.lower())
        if not (has_subject or personalization.get("subject")):
            message = (
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject defined."
            )
            problems.append((message, "subject"))
    if len(seen) > 1000:
        problems.append(("The total number of recipients must be no more than 1000.", None))
    sender = document.get("from")
    if not isinstance(sender, dict):
        message = (
            "The from object must be provided for every email send. It is an object that "
            "requires the email parameter, but may also contain a name parameter."
        )
        problems.append((message, "from"))
    elif not isinstance(sender.get("email"), str) or not _EMAIL.match(sender["email"]):
        problems.append(("The from email does not contain a valid address.", "from.email"))
    problems.extend(_content_problems(document))
    return problems


def _content_problems(document: dict[str, Any]) -> Problems:
    if document.get("template_id"):
        return []
    content = document.get("content")
    valid = isinstance(content, list) and bool(content)
    valid = valid and all(
        isinstance(part, dict)
        and isinstance(part.get("type"), str)
        and isinstance(part.get("value"), str)
        and bool(part["value"])
        for part in content  # type: ignore[union-attr]  # a non-empty list, checked above
    )
    if not valid:
        message = (
            "Unless a valid template_id is provided, the content parameter is required. There "
            "must be at least one defined content block."
        )
        return [(message, "content")]
    types = [part["type"] for part in content]  # type: ignore[union-attr]
    if "text/plain" in types and types[0] != "text/plain":
        message = (
            "If present, text/plain content must be first, followed by text/html, followed by "
            "any other content."
        )
        return [(message, "content")]
    return []
