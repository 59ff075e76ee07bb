"""Test helpers shipped with seawall, for its own tests and for users' tests.

- `FakeClock`: a `seawall.resilience.Clock` whose time moves only when told to,
  so retries, breakers and rate limits are tested without real waiting.
- Fake third-party providers as real HTTP servers on loopback, each with chaos
  knobs (``fake.chaos``, a `ServerChaos`), a request log and counters:
  `FakePaymentGateway` (Stripe-style, with its events API), `FakeCRM`
  (Salesforce-style, with OAuth and a change feed), `FakeNotifications`
  (SendGrid, Twilio and Slack webhooks), `FakeGitHub` (repository webhooks and
  the log of their deliveries) and `EchoServer` (for health checks and
  benchmarks). Build your own on `FakeServer` with `FakeRequest` and `FakeResponse`.
- `FakeSMTPServer`: an SMTP sink that records the `SMTPMessage`s it accepts.
- `webhook_headers`: a body signed the way GitHub, Stripe, Shopify, Slack or
  Standard Webhooks sign theirs, to post to your own receiver.
- `spawn_fake`: any of them in a child process (a `SpawnedServer`), steered
  through its ``POST /_chaos`` and ``GET /_stats`` admin endpoints; the same as
  ``python -m seawall.testing <provider>``.

Run a fake with ``with FakePaymentGateway() as fake:`` (or ``async with``): it
serves ``fake.url`` from a background thread with its own event loop until the
block ends.
"""

from seawall.testing._clock import FakeClock
from seawall.testing._crm import FakeCRM
from seawall.testing._echo import EchoServer
from seawall.testing._faults import Fault, ServerChaos
from seawall.testing._github import FakeGitHub
from seawall.testing._http import FakeRequest, FakeResponse, Handler
from seawall.testing._notifications import FakeNotifications, SentEmail, SentSMS, SlackMessage
from seawall.testing._payments import FakePaymentGateway
from seawall.testing._server import FakeServer, ServerStats
from seawall.testing._signing import SignedProvider, webhook_headers
from seawall.testing._smtp import FakeSMTPServer, SMTPMessage
from seawall.testing._spawn import SpawnedServer, spawn_fake

__all__ = [
    "EchoServer",
    "FakeCRM",
    "FakeClock",
    "FakeGitHub",
    "FakeNotifications",
    "FakePaymentGateway",
    "FakeRequest",
    "FakeResponse",
    "FakeSMTPServer",
    "FakeServer",
    "Fault",
    "Handler",
    "SMTPMessage",
    "SentEmail",
    "SentSMS",
    "ServerChaos",
    "ServerStats",
    "SignedProvider",
    "SlackMessage",
    "SpawnedServer",
    "spawn_fake",
    "webhook_headers",
]
