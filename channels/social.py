"""Posts on the company's public X account, with tweepy's API v2 client.

A broadcast channel: one post per update, not one per subscriber. X gives no error code for a
duplicate post (403 with a message), which is permanent: the renderer must vary the text. Rate
limits are small and tweepy could sleep through them (`wait_on_rate_limit`), which would stall a
worker; instead a 429 becomes a TransientError carrying when the window resets.
"""

from __future__ import annotations

import time
from typing import Any, Self

import requests
import tweepy

from channels.base import (
    Channel,
    Limits,
    Message,
    PermanentError,
    RetryPolicy,
    TransientError,
    error_for_status,
    parse_retry_after,
)
from channels.transport import SANDBOX_CREDENTIAL, SeamSession, credential, sandbox_base
from dispatcher.models import FailureReason
from dispatcher.settings import Settings

X_API = "https://api.twitter.com"


class SocialChannel(Channel):
    """`create_tweet` per message; the id is the post's id."""

    name = "social"
    address_field = None  # broadcast: the public account, not a subscriber's address
    limits = Limits(max_weighted_chars=280)
    max_batch = 1

    def __init__(self, client: Any, retry: RetryPolicy, concurrency: int = 1) -> None:
        super().__init__(retry, concurrency)
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings, retry: RetryPolicy) -> Self:
        """Build the tweepy client once, its session rebased on the sandbox in sandbox mode."""
        keys = [
            credential(settings, attribute, env_name, SANDBOX_CREDENTIAL)
            for attribute, env_name in (
                ("x_api_key", "X_API_KEY"),
                ("x_api_secret", "X_API_SECRET"),
                ("x_access_token", "X_ACCESS_TOKEN"),
                ("x_access_token_secret", "X_ACCESS_TOKEN_SECRET"),
            )
        ]
        client = tweepy.Client(
            consumer_key=keys[0],
            consumer_secret=keys[1],
            access_token=keys[2],
            access_token_secret=keys[3],
            wait_on_rate_limit=False,  # never sleep inside a worker
        )
        client.session = SeamSession(X_API, sandbox_base(settings), settings.provider_timeout_s)
        return cls(client, retry, settings.send_concurrency)

    def send_one(self, message: Message) -> str:
        try:
            response = self._client.create_tweet(text=message.text)
        except tweepy.TooManyRequests as exc:
            raise TransientError(
                self.name,
                "X rate limit reached",
                status_code=429,
                response_excerpt=_text(exc),
                retry_after_s=_retry_after(exc),
            ) from exc
        except tweepy.Forbidden as exc:
            duplicate = any("duplicate" in str(m).lower() for m in exc.api_messages)
            reason = "duplicate content" if duplicate else "X refused the post"
            raise PermanentError(
                self.name, reason, status_code=403, response_excerpt=_text(exc)
            ) from exc
        except tweepy.HTTPException as exc:
            status = int(exc.response.status_code)
            raise error_for_status(
                self.name, status, "X refused the post", response_excerpt=_text(exc)
            ) from exc
        except requests.Timeout as exc:
            raise TransientError(
                self.name, "X did not answer in time", failure_reason=FailureReason.TIMEOUT
            ) from exc
        except requests.RequestException as exc:
            raise TransientError(self.name, f"could not reach X ({type(exc).__name__})") from exc
        except tweepy.TweepyException as exc:  # e.g. OAuth signing problems: not a network issue
            raise PermanentError(self.name, f"tweepy error ({type(exc).__name__})") from exc
        return str(response.data["id"])

    def check_account(self) -> str:
        """GET /2/users/me with the account's user tokens: the harmless check X offers."""
        try:
            response = self._client.get_me(user_auth=True)
        except tweepy.HTTPException as exc:
            status = int(exc.response.status_code)
            raise error_for_status(
                self.name, status, "X refused the credentials", response_excerpt=_text(exc)
            ) from exc
        except requests.RequestException as exc:
            raise TransientError(self.name, f"could not reach X ({type(exc).__name__})") from exc
        return f"X account @{response.data.username}"

    def close(self) -> None:
        self._client.session.close()


def _text(exc: tweepy.HTTPException) -> str:
    return str(exc.response.text)


def _retry_after(exc: tweepy.TooManyRequests) -> float | None:
    """Seconds until X's rate window resets (x-rate-limit-reset is a Unix time), or Retry-After."""
    reset = exc.response.headers.get("x-rate-limit-reset")
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            pass
    return parse_retry_after(exc.response.headers.get("Retry-After"))
