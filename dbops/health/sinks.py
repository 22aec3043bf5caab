"""Where alerts go: Slack-compatible webhook, generic JSON webhook, SMTP email, a JSON-lines log file.

Every sink is tried in its own thread with retries and exponential backoff, so one that is down or slow never
delays or loses the alert for the others; what still failed is returned so the caller can retry it next tick.

| variable | sink |
|---|---|
| ``DBOPS_ALERT_SLACK_WEBHOOK`` | Slack (or Mattermost/Rocket.Chat) incoming webhook URL: ``{"text": ...}`` |
| ``DBOPS_ALERT_WEBHOOK_URL`` | any HTTP endpoint: the alert as a JSON object |
| ``DBOPS_ALERT_SMTP_HOST`` / ``_PORT`` (25) / ``_FROM`` / ``_TO`` (comma-separated) | email |
| ``DBOPS_ALERT_SMTP_USER`` / ``_PASSWORD`` / ``_STARTTLS`` (1) | email login |
| ``DBOPS_ALERT_LOG_FILE`` | JSON lines file (default ``$DBOPS_HOME/alerts.log``) |
"""

from __future__ import annotations

import json
import smtplib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from dbops.errors import ConfigError
from dbops.health.alerts import Alert
from dbops.redact import redact, register_secret
from dbops.settings import AlertSettings

SEND_TIMEOUT_S = 5.0


class Sink:
    """A destination for alerts; ``send`` raises on failure."""

    name = "sink"

    def send(self, alert: Alert) -> None:
        raise NotImplementedError


class JsonWebhookSink(Sink):
    """POST the alert as JSON to any HTTP endpoint (Alertmanager-style receivers, PagerDuty bridges, ...)."""

    def __init__(self, url: str, name: str = "webhook", timeout: float = SEND_TIMEOUT_S) -> None:
        register_secret(url.split("?", 1)[0].rsplit("/", 1)[-1])  # webhook tokens live in the last path segment
        self.url, self.name, self.timeout = url, name, timeout

    def payload(self, alert: Alert) -> dict[str, object]:
        return alert.to_dict()

    def send(self, alert: Alert) -> None:
        body = json.dumps(self.payload(alert)).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - configured URL
                if response.status >= 300:
                    raise OSError(f"HTTP {response.status}")
        except urllib.error.HTTPError as exc:
            raise OSError(f"HTTP {exc.code}") from exc


class SlackWebhookSink(JsonWebhookSink):
    """Slack incoming webhook (Mattermost and Rocket.Chat accept the same ``{"text": ...}``)."""

    def __init__(self, url: str, timeout: float = SEND_TIMEOUT_S) -> None:
        super().__init__(url, name="slack", timeout=timeout)

    def payload(self, alert: Alert) -> dict[str, object]:
        return {"text": alert.text()}


class EmailSink(Sink):
    """Plain-text email through an SMTP relay (STARTTLS and login when configured)."""

    name = "email"

    def __init__(self, host: str, port: int, sender: str, recipients: Sequence[str], user: str | None = None,
                 password: str | None = None, starttls: bool = True, timeout: float = SEND_TIMEOUT_S) -> None:
        register_secret(password)
        self.host, self.port, self.sender, self.recipients = host, port, sender, list(recipients)
        self.user, self.password, self.starttls, self.timeout = user, password, starttls, timeout

    def send(self, alert: Alert) -> None:
        message = EmailMessage()
        message["Subject"] = alert.title()
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(alert.text() + "\n\n" + json.dumps(alert.to_dict(), indent=2))
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls and smtp.has_extn("starttls"):
                smtp.starttls()
            if self.user and self.password:
                smtp.login(self.user, self.password)
            smtp.send_message(message)


class LogFileSink(Sink):
    """Append one JSON line per alert: the record that survives every other sink being down."""

    name = "logfile"
    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def send(self, alert: Alert) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self.path.open("a") as fh:
            fh.write(json.dumps(alert.to_dict(), sort_keys=True) + "\n")


def sinks_from_settings(alerts: AlertSettings) -> list[Sink]:
    """The sinks a target's ``alerts`` settings configure (secrets by reference, resolved here), the log file last."""
    sinks: list[Sink] = []
    if alerts.slack_webhook is not None and alerts.slack_webhook.is_set:
        sinks.append(SlackWebhookSink(alerts.slack_webhook.resolve()))
    if alerts.webhook_url is not None and alerts.webhook_url.is_set:
        sinks.append(JsonWebhookSink(alerts.webhook_url.resolve()))
    smtp = alerts.smtp
    if smtp.host:
        if not smtp.recipients or not smtp.sender:
            raise ConfigError("DBOPS_ALERT_SMTP_HOST is set but DBOPS_ALERT_SMTP_FROM or DBOPS_ALERT_SMTP_TO is empty",
                              "set both (DBOPS_ALERT_SMTP_TO is comma-separated)")
        password = smtp.password.resolve() if smtp.password is not None and smtp.password.is_set else None
        sinks.append(EmailSink(smtp.host, smtp.port, smtp.sender, list(smtp.recipients), smtp.user, password,
                               smtp.starttls))
    sinks.append(LogFileSink(alerts.log_file))
    return sinks


@dataclass(frozen=True)
class Delivery:
    alert: Alert
    sink: str
    ok: bool
    attempts: int
    error: str = ""


def _send_with_retries(sink: Sink, alert: Alert, retries: int, backoff: float) -> Delivery:
    error = ""
    for attempt in range(1, retries + 1):
        try:
            sink.send(alert)
            return Delivery(alert, sink.name, True, attempt)
        except Exception as exc:  # noqa: BLE001 - any sink failure is retried, then reported, never raised
            error = redact(f"{type(exc).__name__}: {exc}")
            if attempt < retries:
                time.sleep(backoff * 2 ** (attempt - 1))
    return Delivery(alert, sink.name, False, retries, error)


def deliver(alerts: Sequence[Alert], sinks: Sequence[Sink], retries: int = 3, backoff: float = 0.5,
            deadline_s: float = 60.0) -> list[Delivery]:
    """Send every alert to every sink concurrently; returns one Delivery per (alert, sink)."""
    if not alerts or not sinks:
        return []
    jobs = [(sink, alert) for alert in alerts for sink in sinks]
    pool = ThreadPoolExecutor(max_workers=min(len(jobs), 16), thread_name_prefix="dbops-alert")
    futures = {pool.submit(_send_with_retries, sink, alert, retries, backoff): (sink, alert) for sink, alert in jobs}
    done, _ = wait(futures, timeout=deadline_s)
    pool.shutdown(wait=False, cancel_futures=True)
    out = []
    for future, (sink, alert) in futures.items():
        if future in done:
            out.append(future.result())
        else:
            out.append(Delivery(alert, sink.name, False, 0, f"no answer within {deadline_s:.0f} s"))
    return out
