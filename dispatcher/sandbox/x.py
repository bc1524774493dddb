"""The fake X API v2: `POST /2/tweets` (JSON {"text"}, any Authorization) and `GET /2/users/me`,
with X's length rule, its refusal of duplicate text and its rate-limit headers."""

from __future__ import annotations

import json
import math
import re
import time
from email.message import Message as HeaderMap
from http import HTTPStatus

from dispatcher.sandbox.replies import Reply, json_reply, retry_after
from dispatcher.sandbox.state import SandboxState, new_record

CHANNEL = "social"
SEND_PATH = re.compile(r"^/2/tweets$")
_URL = re.compile(r"https?://\S+")


def error(status: int, detail: str) -> Reply:
    title = HTTPStatus(status).phrase
    return json_reply(
        status, {"detail": detail, "type": "about:blank", "title": title, "status": status}
    )


def weighted_length(text: str) -> int:
    """X's weighted length (twitter-text v3): a link counts 23, CJK and emoji count 2."""
    without_links = _URL.sub("", text)
    links = len(_URL.findall(text))
    light = (range(0, 4352), range(8192, 8206), range(8208, 8224), range(8242, 8248))
    weight = sum(1 if any(ord(char) in span for span in light) else 2 for char in without_links)
    return weight + 23 * links


def _rate_limited(retry_after_s: float) -> dict[str, str]:
    """X says when the window resets, besides Retry-After; tweepy reads x-rate-limit-reset."""
    return {
        **retry_after(retry_after_s),
        "x-rate-limit-reset": str(math.ceil(time.time() + retry_after_s)),
        "x-rate-limit-remaining": "0",
    }


def _injected(state: SandboxState) -> Reply | None:
    return state.take_fault(CHANNEL, error, _rate_limited)


def _invalid_tweet(message: str) -> Reply:
    return json_reply(
        400,
        {
            "errors": [{"parameters": {"text": []}, "message": message}],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request",
        },
    )


def whoami(state: SandboxState, path: str, headers: HeaderMap) -> Reply | None:
    """The authenticated user, or None for another path; injected faults apply to it too."""
    if path != "/2/users/me":
        return None
    if not (headers.get("Authorization") or "").strip():
        return error(401, "Unauthorized")
    user = {"data": {"id": "1", "name": "Sandbox", "username": "sandbox"}}
    return _injected(state) or json_reply(200, user)


def send(state: SandboxState, path: str, headers: HeaderMap, body: bytes) -> Reply:
    """Post a tweet: checked for length and duplicates, recorded, answered 201."""
    if not (headers.get("Authorization") or "").strip():
        return error(401, "Unauthorized")
    if (fault := _injected(state)) is not None:
        return fault
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    text = document.get("text") if isinstance(document, dict) else None
    if not isinstance(text, str) or not text.strip():
        return _invalid_tweet("The `text` field is required and must be a non-empty string.")
    if weighted_length(text) > 280:
        return _invalid_tweet("The text of your Tweet is too long (over 280 characters).")
    tweet_id = state.claim_tweet(text)
    if tweet_id is None:
        return error(403, "You are not allowed to create a Tweet with duplicate content.")
    state.record([new_record(CHANNEL, None, headers, tweet_id, body=text)])
    return json_reply(
        201, {"data": {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}}
    )
