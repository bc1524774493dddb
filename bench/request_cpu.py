"""CPU per provider request: our adapters (asyncio: Twilio's `*_async` calls and webhooks on
aiohttp) against the same requests through the blocking clients they replaced, side by side.

    .venv/bin/python bench/request_cpu.py            # 20 batches of 100 each, 16 in flight

Why it matters: with a provider's 20 ms round trip, a sender waits far more than it works, so
what bounds one process is the CPU each request costs (our Python and the SDK's), not the wait.
Both sides send batches of 100 with 16 requests in flight, as the dispatcher does: ours through
`Channel.send` (the sending loop), the blocking clients from 16 threads (how our adapters sent
before). The sandbox runs in another process, so this process's CPU time
(`time.process_time`) is the client's alone. Figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from twilio.http.http_client import TwilioHttpClient  # noqa: E402
from twilio.rest import Client  # noqa: E402

from bench.sandbox_proc import SandboxProcess  # noqa: E402
from channels.base import Message  # noqa: E402
from channels.sms import SANDBOX_TWILIO_ACCOUNT_SID  # noqa: E402
from channels.transport import rebase  # noqa: E402
from channels.webhook import sign  # noqa: E402
from dispatcher.delivery.registry import ChannelRegistry  # noqa: E402
from dispatcher.settings import Settings  # noqa: E402

BATCH = 100
IN_FLIGHT = 16


def cpu_ms(send_batch: Callable[[list[int]], object], batches: int) -> float:
    """Milliseconds of this process's CPU per request, over `batches` batches of BATCH, after
    one warm-up batch."""
    send_batch(list(range(BATCH)))
    started = time.process_time()
    for number in range(batches):
        send_batch(list(range(number * BATCH, (number + 1) * BATCH)))
    return (time.process_time() - started) / (batches * BATCH) * 1000


class RebasedTwilioClient(TwilioHttpClient):  # type: ignore[misc]
    """The SDK's stock blocking client (requests), pointed at the sandbox."""

    def __init__(self, base: str) -> None:
        super().__init__(timeout=10)
        self._base = base

    def request(self, method: str, url: str, *args: object, **kwargs: object) -> object:
        return super().request(method, rebase(url, self._base), *args, **kwargs)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help=f"batches of {BATCH} per client")
    args = parser.parse_args(argv)
    sandbox = SandboxProcess(0.0, ROOT)
    try:
        settings = Settings(
            sandbox_url=sandbox.url, database_url="sqlite://", send_concurrency=IN_FLIGHT
        )
        registry = ChannelRegistry(settings)
        sms, webhook = registry.get("sms"), registry.get("webhook")
        stock = Client(
            SANDBOX_TWILIO_ACCOUNT_SID, "x", http_client=RebasedTwilioClient(sandbox.url)
        )
        limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
        blocking = httpx.Client(timeout=10, limits=limits)
        hook = f"{sandbox.url}/hooks/example.com/outage"

        threads = ThreadPoolExecutor(IN_FLIGHT)

        def sms_ours(keys: list[int]) -> object:
            return sms.send([Message(key=k, to="+15550000001", text="API errors") for k in keys])

        def sms_blocking(keys: list[int]) -> object:
            def one(_: int) -> object:
                return stock.messages.create(
                    to="+15550000001", from_="+15005550006", body="API errors"
                )

            return list(threads.map(one, keys))

        def hook_ours(keys: list[int]) -> object:
            return webhook.send(
                [Message(key=k, to=hook, text="API errors", secret="s") for k in keys]
            )

        def hook_blocking(keys: list[int]) -> object:
            def one(_: int) -> object:
                body = b'{"text":"API errors"}'
                headers = {"X-Outage-Signature": sign("s", int(time.time()), body)}
                return blocking.post(hook, content=body, headers=headers)

            return list(threads.map(one, keys))

        figures = {
            "sms_async_ms": cpu_ms(sms_ours, args.batches),
            "sms_blocking_ms": cpu_ms(sms_blocking, args.batches),
            "webhook_async_ms": cpu_ms(hook_ours, args.batches),
            "webhook_blocking_ms": cpu_ms(hook_blocking, args.batches),
        }
        registry.close()
        blocking.close()
        threads.shutdown()
    finally:
        sandbox.close()
    print(f"CPU per request, {args.batches * BATCH:,} requests each, {IN_FLIGHT} in flight:")
    for channel in ("sms", "webhook"):
        ours, theirs = figures[f"{channel}_async_ms"], figures[f"{channel}_blocking_ms"]
        print(
            f"  {channel:<8} ours (asyncio) {ours:.3f} ms   blocking client {theirs:.3f} ms"
            f"   ratio {theirs / ours:.1f}x"
        )
    return figures


if __name__ == "__main__":
    main()
