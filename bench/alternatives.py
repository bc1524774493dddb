"""The two yardsticks that need no broker: a bare HTTP client (the ceiling) and Apprise.

Each runs in a process of its own (`run_in_child`) so its peak memory is its own and it does
not share a GIL with the benchmark's bookkeeping.

- **Ceiling**: asyncio and one pooled `aiohttp` session (already installed: Twilio's SDK needs it;
  httpx's AsyncClient spent 2 ms of CPU a request here, it would have lowered the ceiling) sending
  the very requests our adapters send (Twilio form posts, SendGrid posts of up to 1,000
  personalizations, signed webhook posts, one tweet), with the same number in flight as ours,
  and nothing else: no database, no templates, no retries. No dispatcher can beat it on the same
  sandbox.
- **Apprise**: `apprise.Apprise.notify()` to one `json://` URL per webhook subscriber (Apprise
  has no SMS or email through these providers' sandboxes). Its own concurrency is a shared
  thread pool (`async_mode`, on by default); we size that pool to our concurrency, to be fair.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench.population import spec
from bench.procstat import own_peak_rss_mb

TWILIO_PATH = "/2010-04-01/Accounts/AC" + "0" * 32 + "/Messages.json"
SENDGRID_BATCH = 1000
PLACEHOLDER = "-unsubscribe_url-"


def hook_path(url: str) -> str:
    """Where the sandbox receives a subscriber's webhook (as our adapter rewrites it)."""
    parts = urlsplit(url)
    return f"/hooks/{parts.hostname}{parts.path}"


def run_in_child(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run `function(*args)` in a fresh (spawned) process and return its result dict."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        result: dict[str, Any] = pool.apply(function, args)
    return result


def ceiling(sandbox_url: str, n: int, concurrency: int, texts: dict[str, str]) -> dict[str, Any]:
    """Send the n subscribers' messages (and the public post) as fast as one client can."""
    return asyncio.run(_ceiling(sandbox_url, n, concurrency, texts))


def _requests(n: int, texts: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, aiohttp keyword arguments) for every request, the public post first."""
    auth = "Basic " + base64.b64encode(b"AC" + b"0" * 32 + b":sandbox").decode()
    yield "/2/tweets", {"json": {"text": texts["social"]}, "headers": {"Authorization": "Bearer x"}}
    emails: list[dict[str, Any]] = []
    for index in range(n):
        person = spec(index)
        channel = person.first_channel
        link = f"https://status.example.com/unsubscribe/{index}"
        if channel == "sms":
            form = {"To": person.address("sms"), "From": "+15005550006", "Body": texts["sms"]}
            yield TWILIO_PATH, {"data": form, "headers": {"Authorization": auth}}
        elif channel == "webhook":
            body = json.dumps({"text": texts["webhook"]}, separators=(",", ":")).encode()
            stamp = int(time.time())
            signature = hmac.new(b"secret", f"{stamp}.".encode() + body, hashlib.sha256)
            headers = {
                "Content-Type": "application/json",
                "X-Outage-Signature": f"t={stamp},v1={signature.hexdigest()}",
            }
            yield hook_path(person.address("webhook")), {"data": body, "headers": headers}
        else:
            emails.append(
                {
                    "to": [{"email": person.address("email")}],
                    "custom_args": {"delivery_id": str(index)},
                    "headers": {"List-Unsubscribe": f"<{link}>"},
                    "substitutions": {PLACEHOLDER: link},
                }
            )
            if len(emails) == SENDGRID_BATCH:
                yield _mail(emails, texts["email"])
                emails = []
    if emails:
        yield _mail(emails, texts["email"])


def _mail(personalizations: list[dict[str, Any]], text: str) -> tuple[str, dict[str, Any]]:
    document = {
        "personalizations": personalizations,
        "from": {"email": "status@example.com"},
        "subject": "Investigating: API errors",
        "content": [{"type": "text/plain", "value": text + "\n" + PLACEHOLDER}],
    }
    return "/v3/mail/send", {"json": document, "headers": {"Authorization": "Bearer x"}}


async def _ceiling(sandbox_url: str, n: int, concurrency: int, texts: dict[str, str]) -> dict:
    requests = _requests(n, texts)
    failures = 0
    accepted = time.time()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(sandbox_url, connector=connector) as client:

        async def worker() -> None:
            nonlocal failures
            for path, arguments in requests:  # one shared iterator: work is taken in order
                async with client.post(path, **arguments) as response:
                    await response.read()
                    failures += response.status >= 300

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "accepted": accepted,
        "finished": time.time(),
        "failures": failures,
        "peak_rss_mb": {"client": own_peak_rss_mb()},
    }


def apprise_run(sandbox_url: str, n: int, concurrency: int, text: str) -> dict[str, Any]:
    """Notify every webhook subscriber of the n through Apprise's json:// plugin."""
    import apprise
    import apprise.apprise as core

    # Apprise sends in parallel through one process-wide pool sized by default to the CPUs;
    # give it as many threads as our adapters have, so the comparison is of designs.
    core._shared_executor = ThreadPoolExecutor(max_workers=concurrency)
    host = urlsplit(sandbox_url).netloc
    targets = [
        f"json://{host}{hook_path(spec(index).address('webhook'))}"
        for index in range(n)
        if spec(index).first_channel == "webhook"
    ]
    accepted = time.time()
    notifier = apprise.Apprise()
    notifier.add(targets)
    built = time.time()
    ok = notifier.notify(title="API errors", body=text)
    return {
        "accepted": accepted,
        "finished": time.time(),
        "setup_s": built - accepted,
        "deliveries": len(targets),
        "failures": 0 if ok else -1,
        "peak_rss_mb": {"apprise": own_peak_rss_mb()},
    }
