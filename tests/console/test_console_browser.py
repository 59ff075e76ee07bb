"""The operations console end to end, in a real headless Chromium (Debian's package).

`seawall serve` runs as a process on SQLite with the in-process bus, a fake
payment gateway as an optional dependency checked every 0.3 s, and a consumer
group that refuses "poison" cases while a flag file exists. Playwright drives
Chromium: log in with a key made by ``seawall admin keys create``, watch the
overview turn degraded when the gateway fails, and replay a dead letter until
it leaves the list. Every page is photographed; with
``SEAWALL_UPDATE_SCREENSHOTS=1`` the pictures go to ``docs/img/`` (shown in
docs/operations.md), otherwise to the test's folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from seawall.testing import FakePaymentGateway, webhook_headers
from tests.conftest import need_service
from tests.live_server import Server, clean_environment, seawall_serve

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SEAWALL_TEST_CHROMIUM", "/usr/bin/chromium")
GITHUB_SECRET = "console-e2e-github-secret"
STRIPE_SECRET = "whsec_console_e2e_stripe_secret"
# Chromium as the machine's probe starts it: no sandbox as root, nothing reaching out.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000

playwright_sync = pytest.importorskip("playwright.sync_api")


@dataclass
class Stack:
    server: Server
    key: str
    payments: FakePaymentGateway
    poison_flag: Path
    shots: Path


def _seawall(directory: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "seawall", *args],
        cwd=directory,
        env=clean_environment(SEAWALL_DATABASE_URL=f"sqlite:///{directory}/seawall.db"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("SEAWALL_UPDATE_SCREENSHOTS") == "1":
        return ROOT / "docs" / "img"
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


@pytest.fixture
def stack(tmp_path: Path, shots: Path) -> Iterator[Stack]:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        need_service("chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    _seawall(tmp_path, "migrate")
    key = json.loads(
        _seawall(
            tmp_path,
            "admin",
            "keys",
            "create",
            "--name",
            "console-e2e",
            "--scope",
            "operate",
            "--json",
        )
    )["key"]
    flag = tmp_path / "poison.flag"
    flag.touch()
    with (
        FakePaymentGateway() as payments,
        seawall_serve(
            tmp_path,
            PYTHONPATH=str(ROOT),
            CONSOLE_E2E_POISON_FLAG=str(flag),
            SEAWALL_CONSUMER_MODULES="seawall.app.consumers,tests.console.poison_consumer",
            SEAWALL_HEALTH_INTERVAL_SECONDS="0.3",
            SEAWALL_SERVICES__PAYMENTS__BASE_URL=payments.url,
            SEAWALL_SERVICES__PAYMENTS__HEALTH_PATH="/ping",
            SEAWALL_SERVICES__PAYMENTS__CRITICAL="false",
            SEAWALL_SERVICES__PAYMENTS__RETRY_ATTEMPTS="1",
            SEAWALL_WEBHOOKS__GITHUB__SECRETS=GITHUB_SECRET,
            SEAWALL_WEBHOOKS__STRIPE__SECRETS=STRIPE_SECRET,
        ) as server,
    ):
        server.wait_until_ready()
        try:
            yield Stack(server, key, payments, flag, shots)
        finally:
            server.stop()


def _feed(base_url: str) -> None:
    """A poison case (dead-lettered), a GitHub issue (processed), an early Stripe event (parked)."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        created = client.post(
            "/cases",
            json={"title": "poison pill", "customer_id": "cus_e2e", "priority": "high"},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert created.status_code == 201, created.text
        issue = json.dumps(
            {
                "action": "opened",
                "issue": {
                    "number": 42,
                    "title": "Checkout times out",
                    "state": "open",
                    "labels": [{"name": "urgent"}],
                    "updated_at": "2026-12-06T10:00:00Z",
                },
                "repository": {"full_name": "acme/shop"},
            }
        ).encode()
        github = client.post(
            "/webhooks/github",
            content=issue,
            headers=webhook_headers("github", issue, GITHUB_SECRET, event="issues"),
        )
        payment = json.dumps(
            {
                "id": f"evt_{uuid.uuid4().hex[:16]}",
                "type": "payment_intent.succeeded",
                "created": 1_765_000_000,
                "data": {
                    "object": {
                        "id": "pi_e2e",
                        "status": "succeeded",
                        "amount": 4200,
                        "currency": "eur",
                        "metadata": {"case_id": "crm-ticket-7"},
                    }
                },
            }
        ).encode()
        stripe = client.post(
            "/webhooks/stripe",
            content=payment,
            headers=webhook_headers("stripe", payment, STRIPE_SECRET),
        )
        assert (github.status_code, stripe.status_code) == (200, 200), (github.text, stripe.text)


def test_log_in_watch_a_dependency_fail_and_replay_a_dead_letter(stack: Stack) -> None:  # noqa: PLR0915 - one walk through the console
    _feed(stack.server.base_url)
    base = stack.server.base_url
    expect = playwright_sync.expect
    expect.set_options(timeout=WAIT_MS)
    with playwright_sync.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 820})

            # A stranger lands on the login page; a wrong key is refused.
            page.goto(f"{base}/console/dead-letters")
            expect(page).to_have_url(f"{base}/console/login?next=/console/dead-letters")
            page.fill("input[name=api_key]", "sw_000000000000_" + "x" * 43)
            page.click("button[type=submit]")
            expect(page.locator(".error")).to_contain_text("not valid")
            page.screenshot(path=stack.shots / "console-login.png")

            # The right key goes where the operator was heading.
            page.fill("input[name=api_key]", stack.key)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{base}/console/dead-letters")

            # The overview: healthy, then degraded while the gateway fails, then healthy.
            page.goto(f"{base}/console")
            expect(page.locator("#overall")).to_have_text("healthy")
            payments = page.locator('tr[data-dependency="payments"]')
            expect(payments).to_contain_text("healthy")
            page.screenshot(path=stack.shots / "console-overview.png", full_page=True)
            stack.payments.chaos.error_rate(1.0, status=503)
            expect(page.locator("#overall")).to_have_text("degraded")  # by its own refresh
            expect(payments).to_contain_text("unhealthy")
            page.screenshot(path=stack.shots / "console-overview-degraded.png", full_page=True)
            stack.payments.chaos.error_rate(0)
            expect(page.locator("#overall")).to_have_text("healthy")

            # Webhooks: the list, one delivery, the parked Stripe event.
            page.click("header nav >> text=Webhooks")
            rows = page.locator("#webhooks tbody tr[data-webhook]")
            expect(rows).to_have_count(2)
            page.screenshot(path=stack.shots / "console-webhooks.png", full_page=True)
            page.select_option("select[name=status]", "parked")
            page.click("form.filters button")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("stripe")
            rows.first.locator("a").click()
            expect(page.locator("h1")).to_contain_text("Webhook")
            expect(page.locator("body")).to_contain_text("case:crm-ticket-7")
            page.screenshot(path=stack.shots / "console-webhook.png", full_page=True)
            page.click("header nav >> text=Parked")
            expect(page.locator("#webhooks tbody tr[data-webhook]")).to_have_count(1)
            page.screenshot(path=stack.shots / "console-parked.png", full_page=True)

            # Dead letters: the poison case is there; fix the cause, replay, it leaves.
            page.click("header nav >> text=Dead letters")
            letters = page.locator("#dead-letters tbody tr[data-dead-letter]")
            expect(letters).to_have_count(1)
            expect(letters.first).to_contain_text("audit__from_cases")
            page.screenshot(path=stack.shots / "console-dead-letters.png", full_page=True)
            letters.first.locator("a").click()
            expect(page.locator("body")).to_contain_text("poison flag is up")
            page.screenshot(path=stack.shots / "console-dead-letter.png", full_page=True)
            stack.poison_flag.unlink()
            page.go_back()
            page.locator("#dead-letters tbody tr[data-dead-letter] button").click()
            expect(page.locator(".notice")).to_have_text("Replay queued.")
            expect(letters).to_have_count(0)
            page.select_option("select[name=state]", "replayed")
            page.click("form.filters button")
            expect(letters).to_have_count(1)
            expect(letters.first.locator(".badge")).to_have_text("replayed")
        finally:
            browser.close()
    out, err = stack.server.output()
    assert "Traceback" not in out + err
    assert stack.key not in out + err
