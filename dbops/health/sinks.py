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
from dbops.health.alerts import RESOLVED, Alert
from dbops.redact import redact, register_secret
from dbops.settings import AlertSettings

SEND_TIMEOUT_S = 5.0


class Sink:
    """A destination for alerts; ``send`` raises on failure. ``send_group`` sends one tick's alerts of one target as one
    message (one alert: the alert itself)."""

    name = "sink"

    def send(self, alert: Alert) -> None:
        raise NotImplementedError

    def send_group(self, alerts: Sequence[Alert]) -> None:
        if len(alerts) == 1:
            self.send(alerts[0])
        else:
            self.send_message(AlertGroup(tuple(alerts)))

    def send_message(self, group: AlertGroup) -> None:
        for alert in group.alerts:
            self.send(alert)


@dataclass(frozen=True)
class AlertGroup:
    """The alerts one tick raised and resolved for one target: one message, not one per alert (against fatigue)."""

    alerts: tuple[Alert, ...]

    def title(self) -> str:
        target = self.alerts[0].target
        firing = [a for a in self.alerts if a.status != RESOLVED]
        counts = []
        for severity in ("critical", "warning"):
            n = sum(a.severity == severity for a in firing)
            if n:
                counts.append(f"{n} {severity}")
        resolved = len(self.alerts) - len(firing)
        if resolved:
            counts.append(f"{resolved} resolved")
        where = f" {target}" if target else ""
        return f"[dbops{where}] {len(self.alerts)} alerts: {', '.join(counts)}"

    def text(self) -> str:
        return "\n".join([self.title(), *(f"- {a.text()}" for a in self.alerts)])

    def to_dict(self) -> dict[str, object]:
        return {"group": True, "target": self.alerts[0].target, "title": self.title(), "text": self.text(),
                "alerts": [a.to_dict() for a in self.alerts]}


class JsonWebhookSink(Sink):
    """POST the alert as JSON to any HTTP endpoint (Alertmanager-style receivers, PagerDuty bridges, ...)."""

    def __init__(self, url: str, name: str = "webhook", timeout: float = SEND_TIMEOUT_S) -> None:
        register_secret(url.split("?", 1)[0].rsplit("/", 1)[-1])  # webhook tokens live in the last path segment
        self.url, self.name, self.timeout = url, name, timeout

    def payload(self, alert: Alert) -> dict[str, object]:
        return alert.to_dict()

    def send(self, alert: Alert) -> None:
        self._post(self.payload(alert))

    def send_message(self, group: AlertGroup) -> None:
        self._post(self.group_payload(group))

    def group_payload(self, group: AlertGroup) -> dict[str, object]:
        return group.to_dict()

    def _post(self, payload: dict[str, object]) -> None:
        body = json.dumps(payload).encode()
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

    def group_payload(self, group: AlertGroup) -> dict[str, object]:
        return {"text": group.text()}


class EmailSink(Sink):
    """Plain-text email through an SMTP relay (STARTTLS and login when configured)."""

    name = "email"

    def __init__(self, host: str, port: int, sender: str, recipients: Sequence[str], user: str | None = None,
                 password: str | None = None, starttls: bool = True, timeout: float = SEND_TIMEOUT_S) -> None:
        register_secret(password)
        self.host, self.port, self.sender, self.recipients = host, port, sender, list(recipients)
        self.user, self.password, self.starttls, self.timeout = user, password, starttls, timeout

    def send(self, alert: Alert) -> None:
        self._mail(alert.title(), alert.text() + "\n\n" + json.dumps(alert.to_dict(), indent=2))

    def send_message(self, group: AlertGroup) -> None:
        self._mail(group.title(), group.text() + "\n\n" + json.dumps(group.to_dict(), indent=2))

    def _mail(self, subject: str, body: str) -> None:
        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(body)
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


def _send_with_retries(sink: Sink, alerts: Sequence[Alert], retries: int, backoff: float) -> list[Delivery]:
    error = ""
    for attempt in range(1, retries + 1):
        try:
            sink.send_group(alerts)
            return [Delivery(alert, sink.name, True, attempt) for alert in alerts]
        except Exception as exc:  # noqa: BLE001 - any sink failure is retried, then reported, never raised
            error = redact(f"{type(exc).__name__}: {exc}")
            if attempt < retries:
                time.sleep(backoff * 2 ** (attempt - 1))
    return [Delivery(alert, sink.name, False, retries, error) for alert in alerts]


def deliver(alerts: Sequence[Alert], sinks: Sequence[Sink], retries: int = 3, backoff: float = 0.5,
            deadline_s: float = 60.0) -> list[Delivery]:
    """Send the alerts to every sink concurrently, as one message per sink (alerts of one target and tick);
    returns one Delivery per (alert, sink)."""
    if not alerts or not sinks:
        return []
    pool = ThreadPoolExecutor(max_workers=min(len(sinks), 16), thread_name_prefix="dbops-alert")
    futures = {pool.submit(_send_with_retries, sink, list(alerts), retries, backoff): sink for sink in sinks}
    done, _ = wait(futures, timeout=deadline_s)
    pool.shutdown(wait=False, cancel_futures=True)
    out = []
    for future, sink in futures.items():
        if future in done:
            out.extend(future.result())
        else:
            out.extend(Delivery(alert, sink.name, False, 0, f"no answer within {deadline_s:.0f} s")
                       for alert in alerts)
    return out
