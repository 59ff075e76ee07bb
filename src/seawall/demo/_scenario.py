"""The demo's scenario: six things an integration must get right, each shown and checked.

Every step talks to the running service over HTTP (the Cases API, the webhook
receiver, the health and admin endpoints) or to the fakes, prints what it does,
and checks what it sees: an expectation that does not hold raises `CheckFailed`,
and the demo stops there. Waiting for the asynchronous parts (outbox, relay,
consumers) is polling with a deadline, never a fixed sleep, except the one wait
a breaker asks for (its recovery time).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from secrets import randbelow, token_hex
from typing import Any, Final, TypeVar

import httpx
from pydantic import SecretStr

from seawall.demo._report import Outcome, Reporter
from seawall.demo._stack import NOTIFICATIONS_CONSUMER, DemoSecrets, ServiceProcess
from seawall.errors import CircuitOpenError, SeawallError, ServiceUnavailable
from seawall.http import ExternalService
from seawall.integrations import Charge, StripeGateway
from seawall.resilience import CircuitBreaker
from seawall.testing import FakeNotifications, FakePaymentGateway, webhook_headers

__all__ = ["BREAKER_FAILURES", "BREAKER_RECOVERY_SECONDS", "CheckFailed", "Scenario"]

T = TypeVar("T")

BREAKER_FAILURES: Final = 3
BREAKER_RECOVERY_SECONDS: Final = 2.0
WAIT_SECONDS: Final = 20.0
POLL_SECONDS: Final = 0.2
ACTIVITY_CONSUMER: Final = "activity__from_cases"


class CheckFailed(Exception):  # noqa: N818 - names the condition, like the error tree's leaves
    """An expectation of the demo did not hold; the message says which."""


def expect(condition: bool, message: str) -> None:
    """Raise `CheckFailed` with *message* unless *condition* holds."""
    if not condition:
        raise CheckFailed(message)


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, what: str, timeout: float = WAIT_SECONDS
) -> T:
    """Call *probe* until it returns something other than None, and return that.

    Raises:
        CheckFailed: it still returned None after *timeout* seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await probe()
        if found is not None:
            return found
        if loop.time() >= deadline:
            raise CheckFailed(f"{what} did not happen within {timeout:.0f}s")
        await asyncio.sleep(POLL_SECONDS)


def _short(identifier: str) -> str:
    return identifier[:8]


@dataclass
class Scenario:
    """The steps, run one after the other against a started service and its fakes.

    Attributes:
        client: an HTTP client whose ``base_url`` is the service.
        admin_key: an ``operate`` key of the admin API.
        payments: the fake payment gateway the service health-checks.
        notifications: the fake Slack webhook the demo's consumer posts to.
        secrets: this run's webhook secrets (to sign deliveries) and the others.
        poison_flag: the file that makes the demo's consumer refuse "poison" cases.
        service: the service process (for its log).
        reporter: where progress goes.
    """

    client: httpx.AsyncClient
    admin_key: SecretStr
    payments: FakePaymentGateway
    notifications: FakeNotifications
    secrets: DemoSecrets
    poison_flag: Path
    service: ServiceProcess
    reporter: Reporter
    run: str = field(default_factory=lambda: token_hex(3))

    def steps(self) -> list[tuple[str, Callable[[], Awaitable[Outcome]]]]:
        """The steps, in order, with their titles."""
        return [
            ("Idempotent case creation", self.idempotent_cases),
            ("Payment gateway outage", self.gateway_outage),
            ("Duplicate webhooks", self.duplicate_webhooks),
            ("Early Stripe event", self.early_stripe_event),
            ("Fan-out to two consumer groups", self.fan_out),
            ("Poison message and replay", self.poison_and_replay),
            ("Secrets stay out of the logs", self.secrets_not_logged),
        ]

    async def play(self) -> list[Outcome]:
        """Run every step until one fails; return an outcome per step."""
        steps = self.steps()
        outcomes = [Outcome(title, "") for title, _ in steps]
        for number, (title, run) in enumerate(steps, 1):
            self.reporter.step(number, len(steps), title)
            try:
                outcomes[number - 1] = await run()
            # The service or a fake failing in a way no step expects is a failed step too.
            except (CheckFailed, httpx.HTTPError, SeawallError) as exc:
                why = str(exc) or type(exc).__name__
                self.reporter.fail(why)
                outcomes[number - 1] = Outcome(title, why, status="FAILED")
                break
            self.reporter.ok(outcomes[number - 1].happened)
        return outcomes

    # --- HTTP helpers ---------------------------------------------------------------

    def _admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key.get_secret_value()}"}

    async def _create_case(self, body: dict[str, Any], key: str) -> httpx.Response:
        return await self.client.post("/cases", json=body, headers={"Idempotency-Key": key})

    async def _new_case(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._create_case(body, f"demo-{self.run}-{uuid.uuid4()}")
        expect(response.status_code == 201, f"POST /cases answered {response.status_code}")
        case: dict[str, Any] = response.json()
        return case

    async def _json(self, path: str, *, admin: bool = False, **params: Any) -> Any:
        response = await self.client.get(
            path, params=params or None, headers=self._admin() if admin else None
        )
        expect(
            response.status_code == 200,
            f"GET {path} answered {response.status_code}: {response.text[:200]}",
        )
        return response.json()

    async def _activity(self, case_id: str) -> list[str] | None:
        lines = (await self._json(f"/cases/{case_id}/activity"))["data"]
        return [line["summary"] for line in lines] or None

    def _slack_about(self, case_id: str) -> list[str]:
        return [
            message.text or ""
            for message in self.notifications.slack
            if case_id in (message.text or "")
        ]

    async def _slack_message(self, case_id: str) -> str | None:
        found = self._slack_about(case_id)
        # One line for the progress output: the subject, the title, the case.
        return " | ".join(found[0].splitlines()) if found else None

    # --- 1. idempotency keys --------------------------------------------------------

    async def idempotent_cases(self) -> Outcome:
        """Three cases with Idempotency-Key; one request repeated with its key is replayed."""
        drafts = [
            {"title": "Refund not received", "priority": "high", "customer_id": "cus_123"},
            {"title": "Parcel lost", "priority": "medium", "customer_id": "cus_456"},
            {"title": "Invoice address wrong", "priority": "low", "customer_id": "cus_789"},
        ]
        created: list[tuple[str, str]] = []
        for number, draft in enumerate(drafts, 1):
            key = f"demo-{self.run}-case-{number}"
            response = await self._create_case(draft, key)
            expect(response.status_code == 201, f"POST /cases answered {response.status_code}")
            expect("idempotent-replayed" not in response.headers, "a first request was replayed")
            case_id = response.json()["id"]
            created.append((key, case_id))
            self.reporter.line(
                f"POST /cases {draft['title']!r} with Idempotency-Key {key} "
                f"-> 201, case {_short(case_id)}"
            )
        key, first_id = created[0]
        # The same document with its keys in another order: still the same request.
        repeat = dict(reversed(list(drafts[0].items())))
        response = await self._create_case(repeat, key)
        replayed = response.headers.get("idempotent-replayed")
        self.reporter.line(
            f"POST /cases again with Idempotency-Key {key} -> {response.status_code}, "
            f"Idempotent-Replayed: {replayed}, case {_short(response.json().get('id', '?'))}"
        )
        expect(response.status_code == 201, f"the repeat answered {response.status_code}")
        expect(replayed == "true", "the repeat was not marked Idempotent-Replayed: true")
        expect(response.json()["id"] == first_id, "the repeat returned another case")
        total = (await self._json("/cases", page=1, limit=1))["pagination"]["total"]
        self.reporter.line(f"GET /cases counts {total} cases")
        expect(total == len(drafts), f"{total} cases exist; the repeat must not add one")
        return Outcome(
            "Idempotent case creation",
            "3 cases created; a repeated request was replayed, not created again",
            f"4 POSTs, {total} cases, 1 replayed",
            "passed",
        )

    # --- 2. the payment gateway fails, the breaker opens and recovers ----------------

    def _charge_requests(self) -> int:
        return sum(1 for request in self.payments.requests if request.path == "/v1/charges")

    async def _payments_health(self, wanted: str) -> dict[str, Any] | None:
        response = await self.client.get("/health/dependencies")
        report: dict[str, Any] = response.json()
        payments = report.get("dependencies", {}).get("payments", {})
        return report if payments.get("status") == wanted else None

    async def gateway_outage(self) -> Outcome:
        """The gateway answers 503: the breaker opens, calls fail fast, then it recovers."""
        breaker = CircuitBreaker(
            name="payments",
            failure_threshold=BREAKER_FAILURES,
            recovery_timeout=BREAKER_RECOVERY_SECONDS,
            expected_exception=ExternalService.SICK,
        )
        # No retries here, so that each call is one request and the breaker's count is plain.
        gateway = StripeGateway.build(
            api_key=self.secrets.gateway_api_key,
            base_url=self.payments.url,
            retry=False,
            breaker=breaker,
        )
        invoice = f"INV-{self.run}-2"

        async def charge(invoice: str) -> Charge:
            # A card token, never a card number: the adapter refuses those before sending.
            return await gateway.charge(
                amount=4200, currency="eur", customer="cus_123", invoice=invoice, source="tok_visa"
            )

        async with gateway:
            first = await charge(f"INV-{self.run}-1")
            self.reporter.line(
                f"charge 42.00 EUR with card token tok_visa -> {first.status}, {first.id}"
            )
            self.payments.chaos.error_rate(1.0, status=503)
            self.reporter.line("the gateway now answers 503 to every request")
            failures = 0
            for call in range(1, BREAKER_FAILURES + 1):
                try:
                    await charge(invoice)
                except ServiceUnavailable as exc:
                    failures += 1
                    self.reporter.line(f"call {call}: ServiceUnavailable (HTTP {exc.status})")
            expect(failures == BREAKER_FAILURES, "a charge succeeded while the gateway failed")
            expect(breaker.opened, f"the breaker is {breaker.state} after {failures} failures")
            self.reporter.line(f"breaker 'payments' is {breaker.state}")
            before = self._charge_requests()
            refused = 0
            for call in range(BREAKER_FAILURES + 1, BREAKER_FAILURES + 3):
                try:
                    await charge(invoice)
                except CircuitOpenError as exc:
                    refused += 1
                    self.reporter.line(f"call {call}: failed fast, {exc}")
            sent = self._charge_requests() - before
            expect(refused == 2, "a call went through an open breaker")
            expect(sent == 0, f"{sent} request(s) reached the gateway through an open breaker")
            self.reporter.line("requests that reached the gateway meanwhile: 0")
            report = await eventually(
                lambda: self._payments_health("unhealthy"),
                what="/health/dependencies showing payments unhealthy",
            )
            expect(report["status"] == "degraded", f"overall health is {report['status']}")
            self.reporter.line(
                "GET /health/dependencies: payments unhealthy, overall degraded "
                "(payments is optional: the service keeps working)"
            )
            self.payments.chaos.error_rate(0)
            wait = breaker.retry_after
            self.reporter.line(f"the gateway is fixed; the breaker probes in {wait:.1f}s")
            await asyncio.sleep(wait + POLL_SECONDS)
            probe = await charge(invoice)
            self.reporter.line(f"call {BREAKER_FAILURES + 3}: {probe.status}, {probe.id}")
            expect(breaker.closed, f"the breaker is {breaker.state} after a successful probe")
            self.reporter.line(f"breaker 'payments' is {breaker.state}")
            healthy = await eventually(
                lambda: self._payments_health("healthy"),
                what="/health/dependencies showing payments healthy again",
            )
            self.reporter.line(
                f"GET /health/dependencies: payments healthy, overall {healthy['status']}"
            )
        return Outcome(
            "Payment gateway outage",
            f"{failures} x 503 opened the breaker, {refused} calls failed fast, health "
            "went degraded; a charge went through after the recovery time",
            f"0 requests sent while open; closed after {BREAKER_RECOVERY_SECONDS:.0f}s",
            "passed",
        )

    # --- 3. the same webhook twice ----------------------------------------------------

    async def _post_webhook(self, provider: str, body: bytes, headers: dict[str, str]) -> Any:
        response = await self.client.post(f"/webhooks/{provider}", content=body, headers=headers)
        expect(
            response.status_code == 200,
            f"POST /webhooks/{provider} answered {response.status_code}: {response.text[:200]}",
        )
        return response.json()

    async def _case_with_external_id(self, external_id: str) -> dict[str, Any] | None:
        listed = await self._json("/cases", limit=100)
        for case in listed["data"]:
            if case["external_id"] == external_id:
                found: dict[str, Any] = case
                return found
        return None

    async def _webhook_status(self, webhook_id: str, wanted: str) -> dict[str, Any] | None:
        stored: dict[str, Any] = await self._json(f"/admin/webhooks/{webhook_id}", admin=True)
        return stored if stored["status"] == wanted else None

    async def duplicate_webhooks(self) -> Outcome:
        """One GitHub delivery posted twice: stored and processed once."""
        number = 100 + randbelow(900)
        body = json.dumps(
            {
                "action": "opened",
                "issue": {
                    "number": number,
                    "title": "Checkout button does nothing on Safari",
                    "state": "open",
                    "labels": [{"name": "urgent"}],
                    "updated_at": "2026-12-06T10:00:00Z",
                },
                "repository": {"full_name": "acme/shop"},
            }
        ).encode()
        delivery = str(uuid.uuid4())
        headers = webhook_headers(
            "github",
            body,
            self.secrets.github_webhook.get_secret_value(),
            event="issues",
            delivery_id=delivery,
        )
        first = await self._post_webhook("github", body, headers)
        self.reporter.line(
            f"POST /webhooks/github, issue #{number}, delivery {_short(delivery)} "
            f"-> {json.dumps(first)}"
        )
        again = await self._post_webhook("github", body, headers)
        self.reporter.line(f"the same delivery again -> {json.dumps(again)}")
        expect(first.get("status") == "accepted", f"the first delivery was {first}")
        expect(again.get("status") == "duplicate", f"the redelivery was {again}")
        external_id = f"github:acme/shop#{number}"
        case = await eventually(
            lambda: self._case_with_external_id(external_id),
            what=f"a case for issue {external_id}",
        )
        self.reporter.line(
            f"issue {external_id} became case {_short(case['id'])} "
            f"({case['title']!r}, priority {case['priority']})"
        )
        await eventually(
            lambda: self._webhook_status(first["id"], "processed"),
            what="the delivery being processed",
        )
        stored = await self._json("/admin/webhooks", admin=True, provider="github")
        copies = sum(1 for item in stored["data"] if item["delivery_id"] == delivery)
        self.reporter.line(f"GET /admin/webhooks: {copies} stored delivery, processed")
        expect(copies == 1, f"{copies} copies of the delivery were stored")
        return Outcome(
            "Duplicate webhooks",
            "a GitHub delivery posted twice: accepted, then duplicate; one case made",
            "2 posted, 1 stored, 1 case",
            "passed",
        )

    # --- 4. a payment for a case that does not exist yet -------------------------------

    async def _parked(self, webhook_id: str) -> dict[str, Any] | None:
        parked = await self._json("/admin/parked", admin=True)
        for item in parked["data"]:
            if item["id"] == webhook_id:
                found: dict[str, Any] = item
                return found
        return None

    async def _paid(self, case_id: str) -> dict[str, Any] | None:
        case: dict[str, Any] = await self._json(f"/cases/{case_id}")
        payment = case["metadata"].get("payment")
        return case if isinstance(payment, dict) and payment.get("state") == "paid" else None

    async def early_stripe_event(self) -> Outcome:
        """A Stripe payment arrives before its case: parked, then released by the case."""
        reference = f"ORDER-{self.run}-7"
        body = json.dumps(
            {
                "id": f"evt_{token_hex(12)}",
                "object": "event",
                "type": "payment_intent.succeeded",
                "created": int(time.time()),
                "data": {
                    "object": {
                        "id": f"pi_{token_hex(12)}",
                        "object": "payment_intent",
                        "status": "succeeded",
                        "amount": 4200,
                        "currency": "eur",
                        "metadata": {"case_id": reference},
                    }
                },
            }
        ).encode()
        headers = webhook_headers("stripe", body, self.secrets.stripe_webhook.get_secret_value())
        answer = await self._post_webhook("stripe", body, headers)
        self.reporter.line(
            f"POST /webhooks/stripe payment_intent.succeeded for {reference} "
            f"-> {json.dumps(answer)}"
        )
        expect(answer.get("status") == "accepted", f"the delivery was {answer}")
        parked = await eventually(
            lambda: self._parked(answer["id"]), what="the Stripe delivery being parked"
        )
        self.reporter.line(f"GET /admin/parked: parked, waiting for {parked['waiting_for']}")
        expect(
            parked["waiting_for"] == f"case:{reference}",
            f"the delivery waits for {parked['waiting_for']}",
        )
        case = await self._new_case(
            {"title": "Order 7: payment query", "priority": "medium", "external_id": reference}
        )
        self.reporter.line(f"POST /cases with external_id {reference} -> case {_short(case['id'])}")
        paid = await eventually(
            lambda: self._paid(case["id"]), what="the parked payment reaching its case"
        )
        payment = paid["metadata"]["payment"]
        self.reporter.line(
            f"the delivery was released: case metadata.payment = {payment['state']}, "
            f"{payment['amount'] / 100:.2f} {str(payment['currency']).upper()}"
        )
        await eventually(
            lambda: self._webhook_status(answer["id"], "processed"),
            what="the released delivery being processed",
        )
        self.reporter.line("GET /admin/webhooks/{id}: processed")
        return Outcome(
            "Early Stripe event",
            "a Stripe payment for a case not created yet was parked, then released "
            "when the case was created",
            "case metadata.payment: paid",
            "passed",
        )

    # --- 5. one event, two consumer groups ----------------------------------------------

    async def fan_out(self) -> Outcome:
        """A new case reaches the service's timeline and the demo's Slack channel."""
        case = await self._new_case(
            {"title": "Checkout times out for EU customers", "priority": "high"}
        )
        self.reporter.line(f"POST /cases -> case {_short(case['id'])}, one case.created event")
        timeline = await eventually(
            lambda: self._activity(case["id"]), what="the case's timeline line"
        )
        self.reporter.line(f"{ACTIVITY_CONSUMER}: GET /cases/{{id}}/activity -> {timeline[0]!r}")
        message = await eventually(
            lambda: self._slack_message(case["id"]), what="the case's Slack message"
        )
        self.reporter.line(
            f"{NOTIFICATIONS_CONSUMER}: Slack got {message!r} "
            f"(the fake Slack holds {len(self.notifications.slack)} messages)"
        )
        copies = len(self._slack_about(case["id"]))
        expect(copies == 1, f"{copies} Slack messages for one case")
        expect(len(timeline) == 1, f"{len(timeline)} timeline lines for one event")
        return Outcome(
            "Fan-out to two consumer groups",
            "one case.created event: a timeline line and a Slack message",
            "2 groups, 1 effect each",
            "passed",
        )

    # --- 6. a poison message, dead-lettered and replayed -------------------------------

    async def _dead_letter(self, case_id: str) -> dict[str, Any] | None:
        listed = await self._json(
            "/admin/dead-letters", admin=True, consumer=NOTIFICATIONS_CONSUMER, state="all"
        )
        for item in listed["data"]:
            letter: dict[str, Any] = await self._json(
                f"/admin/dead-letters/{item['id']}", admin=True
            )
            body = letter.get("body")
            # The letter's own subject is the bus subject; the event's names the case.
            if isinstance(body, dict) and body.get("subject") == case_id:
                return letter
        return None

    async def _letter_state(self, letter_id: int, wanted: str) -> dict[str, Any] | None:
        letter: dict[str, Any] = await self._json(f"/admin/dead-letters/{letter_id}", admin=True)
        return letter if letter["state"] == wanted else None

    async def poison_and_replay(self) -> Outcome:
        """A case one consumer group cannot take goes to the dead letters, then is replayed."""
        await asyncio.to_thread(self.poison_flag.touch)
        self.reporter.line("a bug ships: the Slack formatter refuses titles starting 'poison'")
        case = await self._new_case(
            {"title": "poison pill: emoji-only customer name", "priority": "low"}
        )
        self.reporter.line(f"POST /cases {case['title']!r} -> case {_short(case['id'])}")
        letter = await eventually(
            lambda: self._dead_letter(case["id"]), what="a dead letter for the poison case"
        )
        self.reporter.line(
            f"GET /admin/dead-letters: #{letter['id']} for {letter['consumer']}, "
            f"state {letter['state']}: {letter['error']}"
        )
        expect(letter["state"] == "dead", f"the dead letter is {letter['state']}")
        timeline = await eventually(
            lambda: self._activity(case["id"]), what="the poison case's timeline line"
        )
        self.reporter.line(f"{ACTIVITY_CONSUMER} was not affected: {timeline[0]!r}")
        expect(not self._slack_about(case["id"]), "Slack got the poison case anyway")
        await asyncio.to_thread(self.poison_flag.unlink)
        self.reporter.line("the fix ships (flag removed)")
        response = await self.client.post(
            f"/admin/dead-letters/{letter['id']}/replay", headers=self._admin()
        )
        self.reporter.line(
            f"POST /admin/dead-letters/{letter['id']}/replay -> {response.status_code}"
        )
        expect(response.status_code == 202, f"the replay answered {response.status_code}")
        await eventually(
            lambda: self._letter_state(letter["id"], "replayed"),
            what="the dead letter being replayed",
        )
        message = await eventually(
            lambda: self._slack_message(case["id"]), what="the replayed case's Slack message"
        )
        self.reporter.line(f"dead letter #{letter['id']} is replayed; Slack got {message!r}")
        return Outcome(
            "Poison message and replay",
            "the Slack consumer refused a poison case (dead letter); the timeline "
            "did not; an admin replay after the fix delivered it",
            f"dead letter #{letter['id']}: dead -> replayed",
            "passed",
        )

    # --- 7. nothing secret in the logs -----------------------------------------------

    async def secrets_not_logged(self) -> Outcome:
        """None of this run's secrets, nor the admin key, is in the service's log."""
        log = await asyncio.to_thread(self.service.log_text)
        named = {
            "the GitHub webhook secret": self.secrets.github_webhook.get_secret_value(),
            "the Stripe webhook secret": self.secrets.stripe_webhook.get_secret_value(),
            "the gateway API key": self.secrets.gateway_api_key.get_secret_value(),
            "the Slack webhook token": self.secrets.slack_token,
            "the admin key": self.admin_key.get_secret_value(),
        }
        leaked = [name for name, value in named.items() if value in log]
        lines = log.count("\n")
        self.reporter.line(
            f"looked for {len(named)} secrets in {lines} lines of {self.service.log_path.name}"
        )
        expect(not leaked, f"the service log holds {', '.join(leaked)}")
        return Outcome(
            "Secrets stay out of the logs",
            "no webhook secret, API key, Slack token or admin key in the service's log",
            f"{len(named)} secrets, {lines} log lines, 0 found",
            "passed",
        )
