"""Settings: the environment first, then `config/outage.toml`, then the embedded defaults.

The embedded defaults (SQLite file, no broker, sandbox providers) are what make `make demo` work on
a fresh machine; a deployment changes only environment variables, never code paths.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Literal

import limits
import phonenumbers
from pydantic import BaseModel, Field, IPvAnyNetwork, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dispatcher.ingest.events import IngestMapping
from dispatcher.logs import mask_secrets
from dispatcher.models import Cadence, Severity

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = PROJECT_ROOT / "config" / "outage.toml"
TEMPLATES_DIR = PROJECT_ROOT / "templates"


def templates_dir() -> Path:
    """Where the templates are read from: `OUTAGE_TEMPLATES_DIR`, an operator's own copy of
    `templates/` (the company's wording, another language), else the project's. Read when the
    templates are first loaded, as the Jinja environments are built once per process."""
    return Path(os.environ.get("OUTAGE_TEMPLATES_DIR") or TEMPLATES_DIR)


# Where text messages may go by default: North America, the UK and Ireland, the EU and EEA,
# Switzerland, Australia and New Zealand. Set OUTAGE_SMS_COUNTRIES to the countries your
# customers live in; the fewer, the less an SMS-pumping attack can cost.
SMS_COUNTRIES = (
    *("US", "CA", "GB", "IE", "CH", "NO", "IS", "LI", "AU", "NZ"),
    *("AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IT"),
    *("LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE"),
)


class RateLimit(BaseModel):
    """A token bucket: `per_s` messages per second on average, at most `burst` at once."""

    per_s: float = Field(gt=0)
    burst: int = Field(ge=1)


class Settings(BaseSettings):
    """Everything an operator can set; provider credentials use the providers' own names."""

    model_config = SettingsConfigDict(env_prefix="OUTAGE_", extra="ignore", toml_file=CONFIG_FILE)

    database_url: str = "sqlite:///outage.sqlite3"
    auto_migrate: bool = Field(
        default=False,
        description="`outage serve` and `outage worker` upgrade the schema as they start;"
        " unset, a schema behind this release stops them until `outage db upgrade`",
    )
    broker_url: str = Field(
        default="embedded",
        description="'embedded' runs the pipeline in-process; redis:// or amqp:// for workers",
    )
    providers: Literal["sandbox", "live"] = "sandbox"
    sandbox_url: str | None = Field(
        default=None, description="a sandbox already running; unset starts one in-process"
    )
    public_url: str = "http://127.0.0.1:8000"
    company_name: str = "Example Cloud"
    support_url: str | None = None

    # Retries: tenacity inside one send, then the queue across sends.
    send_attempts: int = Field(default=3, ge=1, description="tries inside one send")
    send_backoff_s: float = Field(default=0.5, ge=0, description="first backoff inside a send")
    send_backoff_max_s: float = Field(default=10.0, ge=0)
    delivery_attempts: int = Field(default=5, ge=1, description="sends before a delivery fails")
    delivery_backoff_s: float = Field(default=5.0, ge=0, description="first delay between sends")
    delivery_backoff_max_s: float = Field(default=300.0, ge=0)
    lease_s: float = Field(
        default=15.0,
        gt=0,
        description="a claimed delivery's lease, renewed while its worker works on it: a dead"
        " worker's deliveries are sent again after this long",
    )
    provider_timeout_s: float = Field(default=10.0, gt=0)
    webhook_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="a subscriber's webhook endpoint answers within this, or is tried again later",
    )
    webhook_concurrency: int = Field(
        default=64,
        ge=1,
        description="webhook requests in flight per process: each to a server of its own, so"
        " that a few hanging receivers do not take every slot",
    )
    sms_max_segments: int = Field(default=2, ge=1)
    batch_size: int = Field(default=200, ge=1, description="deliveries per send task")
    send_concurrency: int = Field(default=16, ge=1, description="parallel requests per batch")

    # Delivery guarantees under faults (dispatcher/delivery/ratelimit.py, breaker.py, receipts.py).
    # Pacing per provider account, shared by all workers (Redis when it is the broker), in
    # messages per second; a channel not listed is not paced (webhooks: each subscriber's own
    # server). Defaults from the providers' documents: Twilio sends 1 segment/s per long code,
    # 3 per toll-free number, 30 per short code (we assume a short code; Twilio queues beyond it,
    # and answers 429/20429 past the account's REST concurrency); SendGrid publishes no fixed
    # mail/send number (an older page said up to 10,000 requests/s; its 429 carries
    # X-RateLimit-Reset), so we allow one full 1,000-recipient request per second; X allows 100
    # posts per 15 min per user (Basic tier). Set the whole dict:
    # OUTAGE_RATE_LIMITS='{"sms": {"per_s": 1, "burst": 1}}'.
    rate_limits: dict[str, RateLimit] = Field(
        default_factory=lambda: {
            "sms": RateLimit(per_s=30, burst=30),
            "email": RateLimit(per_s=1000, burst=1000),
            "social": RateLimit(per_s=100 / 900, burst=100),
        }
    )
    pace_max_wait_s: float = Field(
        default=2.0, ge=0, description="longest pacing wait inside a task; longer: requeued"
    )
    breaker_channels: list[str] = Field(
        default=["sms", "email", "social"],
        description="channels with a circuit breaker (not webhooks: one per subscriber server)",
    )
    redis_prefix: str = Field(
        default="outage",
        min_length=1,
        description="starts this dispatcher's Redis keys: rate buckets, breakers, sign-up"
        " counters (not Celery's queues)",
    )
    breaker_threshold: int = Field(default=5, ge=1, description="transient failures in a row")
    breaker_open_s: float = Field(default=30.0, gt=0, description="open this long, then probe")
    receipt_timeout_s: float | None = Field(
        default=None, gt=0, description="no receipt this long: next channel (unset: never)"
    )
    receipt_channels: list[str] = Field(
        default=["sms", "email"], description="channels whose providers send delivery receipts"
    )
    sendgrid_event_public_key: str | None = Field(
        default=None, description="verifies SendGrid's signed event webhook (base64 DER)"
    )
    # Outgoing webhooks go to public addresses only (dispatcher/egress.py); these networks too.
    webhook_allow_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description='internal networks webhooks may be sent to, e.g. ["10.20.0.0/16"]',
    )
    sendgrid_event_tolerance_s: float = Field(
        default=300, gt=0, description="a signed SendGrid event stamped further from now: refused"
    )
    sweep_every_s: float = Field(
        default=5.0, gt=0, description="every worker runs the sweep this often (beat too, if run)"
    )
    sweep_stale_s: float = Field(
        default=30.0, ge=0, description="a queued delivery untouched this long has lost its task"
    )

    # Channel senders (not secret) and credentials (secret; only read from the environment).
    secret_key: SecretStr | None = Field(
        default=None,
        description="signs subscriber links; unset: a key generated once and kept in the database",
    )
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token for the operator API (/api/incidents, …)"
    )
    webhook_token: SecretStr | None = Field(
        default=None, description="Bearer token monitoring systems send to /webhooks/*"
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="Bearer token Prometheus sends to /metrics; unset: open"
    )
    api_docs: Literal["operator", "public"] = Field(
        default="operator",
        description="who may read /docs, /redoc and /openapi.json: the operator token, or anyone",
    )

    # Monitoring webhooks: how payloads map, when a resolve is announced, who may publish.
    ingest: IngestMapping = Field(default_factory=IngestMapping)
    webhook_tokens: dict[str, SecretStr] = Field(
        default_factory=dict, description="per source (alertmanager, grafana, …): its own token"
    )
    generic_hmac_secret: SecretStr | None = Field(
        default=None, description="lets the generic source sign bodies instead of a token"
    )
    pagerduty_webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias="PAGERDUTY_WEBHOOK_SECRET",
        description="the V3 webhook subscription's signing secret; comma-separated while rotating",
    )
    webhook_max_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="the largest request body on any route (monitoring webhooks send the"
        " largest; the subscriber forms have smaller caps of their own)",
    )
    flap_window_s: float = Field(
        default=900, ge=0, description="a group firing again this soon reopens its incident"
    )
    resolve_hold_s: float = Field(
        default=120, ge=0, description="a resolve is announced once it has held this long"
    )
    auto_publish: dict[str, Severity] = Field(
        default_factory=dict,
        description="per source, the lowest severity published without an operator's approval;"
        " a source not listed opens drafts",
    )

    # Never flood a person (dispatcher/policy/pacing.py).
    coalesce_window_s: float = Field(
        default=120, ge=0, description="a second message about an incident waits this long"
    )
    hourly_cap: int = Field(default=6, ge=1, description="messages per person and channel/hour")
    cadence: dict[str, Cadence] = Field(
        default_factory=lambda: {
            "sms": Cadence.OPEN_AND_RESOLVE,
            "email": Cadence.EVERY_UPDATE,
            "webhook": Cadence.EVERY_UPDATE,
            "social": Cadence.STATE_CHANGES,
        },
        description="which updates each channel carries",
    )

    # Keeping promises (dispatcher/policy/promises.py).
    reminder_lead_s: float = Field(
        default=300, ge=0, description="remind the team this long before a promised update"
    )
    holding_updates: bool = Field(
        default=True, description="post 'still working on it' when a promised update is missed"
    )
    maintenance_notices_s: list[float] = Field(
        default_factory=lambda: [86400.0, 3600.0],
        description="remind subscribers this long before planned maintenance starts",
    )
    feedback_url: str | None = Field(
        default=None, description="a short survey linked from every resolved message"
    )

    sms_from: str = "+15005550006"
    email_from: str = "status@example.com"
    twilio_account_sid: str | None = Field(default=None, validation_alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: SecretStr | None = Field(default=None, validation_alias="TWILIO_AUTH_TOKEN")
    sendgrid_api_key: SecretStr | None = Field(default=None, validation_alias="SENDGRID_API_KEY")
    x_api_key: SecretStr | None = Field(default=None, validation_alias="X_API_KEY")
    x_api_secret: SecretStr | None = Field(default=None, validation_alias="X_API_SECRET")
    x_access_token: SecretStr | None = Field(default=None, validation_alias="X_ACCESS_TOKEN")
    x_access_token_secret: SecretStr | None = Field(
        default=None, validation_alias="X_ACCESS_TOKEN_SECRET"
    )
    broadcast: list[str] = Field(
        default=["social"],
        description="broadcast channels that post each update once (the company's X account)",
    )

    # Subscriber self-service: the preference centre, public sign-up, inbound SMS keywords.
    components: list[str] = Field(
        default_factory=list,
        description="components subscribers can choose from (those seen in incidents are added)",
    )
    signup_enabled: bool = Field(
        default=True, description="accept public sign-ups at POST /api/subscribers"
    )
    sms_countries: Annotated[list[str], NoDecode] = Field(
        default=list(SMS_COUNTRIES),
        description="countries whose mobile numbers may sign up for texts (ISO codes, comma"
        " separated): dispatcher/subscribers/numbers.py",
    )

    # Sign-up abuse (dispatcher/subscribers/throttle.py): how often anyone may make us send a
    # confirmation. Limits in the `limits` library's notation: "5/hour", "3 per day".
    signup_limit_per_client: str = Field(
        default="5/hour", description="confirmation messages one client IP may ask for"
    )
    signup_limit_per_address: str = Field(
        default="3/day", description="confirmation messages one email address or number gets"
    )
    sms_confirmation_budget: str = Field(
        default="100/hour",
        description="confirmation texts for everyone together; past it, sign-up by text pauses"
        " and the team is told",
    )
    limits_url: str | None = Field(
        default=None,
        pattern=r"^rediss?://",
        description="Redis URL for the sign-up counters; unset: the broker when it is Redis,"
        " else this process's memory",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs of reverse proxies whose X-Forwarded-For names the client",
    )
    signup_min_fill_s: float = Field(
        default=3.0, ge=0, description="a sign-up form sent sooner after it was shown is a bot's"
    )

    @field_validator("sms_countries", mode="before")
    @classmethod
    def _country_codes(cls, value: object) -> object:
        """`US,DE,FR` as operators write it (a JSON list works too); each a known code."""
        codes = [str(code).upper() for code in _listed(value)]
        unknown = [code for code in codes if code not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"not ISO 3166 country codes with a number plan: {unknown}")
        return codes

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> list[str]:
        """`10.0.0.0/8, 192.0.2.7` (a JSON list works too); each an IP network."""
        try:
            return [str(ip_network(str(item), strict=False)) for item in _listed(value)]
        except ValueError as exc:
            raise ValueError(f"not an IP network: {exc}") from None

    @field_validator(
        "signup_limit_per_client", "signup_limit_per_address", "sms_confirmation_budget"
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            limits.parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate such as 5/hour or 3 per day") from None
        return value

    # Audiences by impact (dispatcher/policy/scope.py): a subscriber without an attribute that a
    # scoped incident names is told (include: when in doubt, tell) or left alone (exclude).
    unscoped: Literal["include", "exclude"] = Field(
        default="include",
        description="a scoped incident and a subscriber without that attribute: tell or not",
    )

    @property
    def embedded(self) -> bool:
        return self.broker_url == "embedded"

    def secret_values(self) -> list[str]:
        """Every secret set here (credentials, tokens, keys): what logs mask by value."""
        found: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            values = value.values() if isinstance(value, dict) else [value]
            found += [v.get_secret_value() for v in values if isinstance(v, SecretStr)]
        return found

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def _listed(value: object) -> list[object]:
    """A list setting as an operator writes it in the environment: comma separated, or JSON."""
    if isinstance(value, str):
        value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
    if not isinstance(value, list | tuple):
        raise ValueError("a comma-separated list")
    return [item.strip() if isinstance(item, str) else item for item in value if str(item).strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """One Settings per process; tests clear the cache after changing the environment. Their
    secrets are masked in every log line from here on, whichever library writes it."""
    settings = Settings()
    mask_secrets(settings.secret_values())
    return settings
