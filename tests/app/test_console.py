"""The operations console over ASGI: log-in, pages, buttons, CSRF and what a stranger gets.

The browser test (`tests/console/test_console_browser.py`) drives the same pages in
Chromium; these check the rules a browser cannot easily show.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from seawall.app import create_app
from seawall.app._console import COOKIE
from seawall.app._state import ServiceState
from seawall.auth import ApiKeys
from seawall.config import AdminSettings, ServiceSettings, Settings
from seawall.db import Database
from seawall.messaging import DeadLetters
from seawall.testing import EchoServer
from tests.app.test_admin import dead_letter, stored_webhook
from tests.auth.identity import AUDIENCE, ISSUER, FakeIdentityProvider


@dataclass
class Keys:
    read: str
    operate: str
    operate_id: str


@pytest.fixture
async def keys(database: Database) -> Keys:
    store = ApiKeys(database)
    _, read = await store.create("reader", "read")
    record, operate = await store.create("operator", "operate")
    return Keys(read.get_secret_value(), operate.get_secret_value(), record.id)


@pytest.fixture
async def browser(settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies, like a browser, against a started app."""
    app = create_app(settings, database=database)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield client


async def log_in(
    client: httpx.AsyncClient, key: str, next_page: str = "/console"
) -> httpx.Response:
    return await client.post("/console/login", data={"api_key": key, "next": next_page})


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert match is not None, "the page has no CSRF token"
    return match.group(1)


# --- logging in ------------------------------------------------------------------------


async def test_a_stranger_is_sent_to_the_login_page_with_where_they_were_going(
    browser: httpx.AsyncClient,
) -> None:
    response = await browser.get("/console/dead-letters?state=dead")

    assert response.status_code == 303
    expected = "/console/login?next=/console/dead-letters%3Fstate%3Ddead"
    assert response.headers["location"] == expected


async def test_a_good_key_logs_in_with_a_strict_http_only_cookie(
    browser: httpx.AsyncClient, keys: Keys
) -> None:
    response = await log_in(browser, keys.read, "/console/webhooks")

    assert response.status_code == 303
    assert response.headers["location"] == "/console/webhooks"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert all(part in cookie for part in ("HttpOnly", "SameSite=strict", "Path=/console"))
    page = await browser.get("/console")
    assert page.status_code == 200
    assert "reader" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("key", ["", "sw_0123456789ab_" + "a" * 43, "x" * 5000, "\x00"])
async def test_a_bad_key_is_401_and_never_echoed(browser: httpx.AsyncClient, key: str) -> None:
    response = await log_in(browser, key)

    assert response.status_code == 401
    assert "not valid" in response.text
    assert "set-cookie" not in response.headers
    if key:
        assert key[:20] not in response.text


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/console", "/admin/keys", "/console\\@evil"]
)
async def test_login_never_redirects_outside_the_console(
    browser: httpx.AsyncClient, keys: Keys, target: str
) -> None:
    response = await log_in(browser, keys.read, target)

    assert response.headers["location"] == "/console"


async def test_a_revoked_key_is_logged_out_at_once(
    browser: httpx.AsyncClient, keys: Keys, database: Database
) -> None:
    await log_in(browser, keys.operate)
    assert (await browser.get("/console")).status_code == 200

    await ApiKeys(database).revoke(keys.operate_id)

    assert (await browser.get("/console")).status_code == 303
    assert (await browser.get("/console", headers={"X-Console-Fragment": "1"})).status_code == 401


async def test_logging_out_forgets_the_cookie(browser: httpx.AsyncClient, keys: Keys) -> None:
    await log_in(browser, keys.read)
    page = await browser.get("/console")

    response = await browser.post("/console/logout", data={"csrf": csrf_of(page.text)})

    assert response.headers["location"] == "/console/login"
    assert (await browser.get("/console")).status_code == 303


async def test_a_logout_from_another_site_is_ignored(
    browser: httpx.AsyncClient, keys: Keys
) -> None:
    await log_in(browser, keys.read)

    forged = await browser.post("/console/logout", data={"csrf": "é" * 64})

    assert forged.headers["location"] == "/console"
    assert "set-cookie" not in forged.headers
    assert (await browser.get("/console")).status_code == 200


async def test_a_notice_is_a_code_never_text_from_the_url(
    browser: httpx.AsyncClient, keys: Keys
) -> None:
    await log_in(browser, keys.read)

    planted = await browser.get("/console", params={"notice": "Re-enter your key at evil.example"})
    known = await browser.get("/console", params={"notice": "purged"})

    assert "evil.example" not in planted.text
    assert '<p class="notice">Purged.</p>' in known.text


async def test_a_token_without_a_console_scope_cannot_log_in(
    settings: Settings, database: Database
) -> None:
    with FakeIdentityProvider() as idp:
        configured = settings.model_copy(
            update={"admin": AdminSettings(jwks_url=idp.jwks_url, issuer=ISSUER, audience=AUDIENCE)}
        )
        app = create_app(configured, database=database)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client,
        ):
            unscoped = await log_in(client, idp.token(scope="profile email"))
            client.cookies.set(COOKIE, idp.token(scope="profile"), path="/console")
            planted = await client.get("/console")
            client.cookies.clear()
            scoped = await log_in(client, idp.token(scope="read"))

    assert unscoped.status_code == 401
    assert planted.status_code == 303
    assert scoped.status_code == 303
    assert scoped.headers["location"] == "/console"


async def test_a_form_body_that_is_too_large_or_not_text_logs_nobody_in(
    browser: httpx.AsyncClient,
) -> None:
    huge = await browser.post("/console/login", content=b"api_key=" + b"a" * 10_000)
    binary = await browser.post(
        "/console/login",
        content=b"\xff\xfe\x00",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert (huge.status_code, binary.status_code) == (401, 401)


# --- pages -----------------------------------------------------------------------------


async def test_the_overview_shows_health_outbox_and_dead_letters(
    browser: httpx.AsyncClient, keys: Keys, database: Database
) -> None:
    await dead_letter(database)
    await log_in(browser, keys.read)

    page = await browser.get("/console")

    assert page.status_code == 200
    assert re.search(r'id="overall">healthy<', page.text)
    assert re.search(r'id="dead-letters">1<', page.text)
    assert 'data-dependency="database"' in page.text


async def test_a_fragment_request_gets_the_content_without_the_frame(
    browser: httpx.AsyncClient, keys: Keys
) -> None:
    await log_in(browser, keys.read)

    fragment = await browser.get("/console", headers={"X-Console-Fragment": "1"})

    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert 'id="overall"' in fragment.text


async def test_webhooks_are_filtered_and_shown_with_their_body(
    browser: httpx.AsyncClient, keys: Keys, database: Database
) -> None:
    failed = await stored_webhook(database, status="failed", provider="acme")
    other = await stored_webhook(database, status="processed", provider="other")
    await log_in(browser, keys.read)

    listed = await browser.get("/console/webhooks", params={"provider": "acme"})
    shown = await browser.get(f"/console/webhooks/{failed}")
    parked = await browser.get("/console/parked")

    assert f'data-webhook="{failed}"' in listed.text
    assert f'data-webhook="{other}"' not in listed.text
    assert shown.status_code == 200
    assert "&#34;hello&#34;: &#34;world&#34;" in shown.text
    assert "Nothing here." in parked.text


async def test_unknown_records_are_404_pages(browser: httpx.AsyncClient, keys: Keys) -> None:
    await log_in(browser, keys.read)
    page = await browser.get("/console")

    huge = "9" * 30
    assert (await browser.get(f"/console/dead-letters/{huge}")).status_code == 422
    assert (await browser.get("/console/webhooks/a%00b")).status_code == 422
    assert (await browser.get("/console/webhooks/" + "w" * 200)).status_code == 422
    bad_csrf = await browser.post("/console/dead-letters/1/purge", data={"csrf": "é"})
    assert bad_csrf.status_code == 403
    assert page.status_code == 200

    assert (await browser.get("/console/webhooks/nope")).status_code == 404
    assert (await browser.get("/console/dead-letters/999999")).status_code == 404
    assert (await browser.get("/console/dead-letters/not-a-number")).status_code == 422


async def test_a_hostile_filter_is_escaped_not_run(browser: httpx.AsyncClient, keys: Keys) -> None:
    await log_in(browser, keys.read)

    page = await browser.get(
        "/console/webhooks", params={"provider": "<script>alert(1)</script>", "status": "bogus"}
    )

    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;" in page.text


# --- buttons ---------------------------------------------------------------------------


async def test_an_operator_replays_a_dead_letter_and_it_leaves_the_list(
    browser: httpx.AsyncClient, keys: Keys, database: Database
) -> None:
    letter = await dead_letter(database)
    await log_in(browser, keys.operate)
    page = await browser.get("/console/dead-letters")
    assert f'data-dead-letter="{letter}"' in page.text

    response = await browser.post(
        f"/console/dead-letters/{letter}/replay",
        data={"csrf": csrf_of(page.text), "back": "/console/dead-letters"},
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/console/dead-letters?notice=replay-queued"
    assert f'data-dead-letter="{letter}"' not in (await browser.get("/console/dead-letters")).text
    stored = await DeadLetters(database).get(letter)
    assert stored is not None
    assert stored.state in ("replay", "replayed")


async def test_a_button_without_the_csrf_token_changes_nothing(
    browser: httpx.AsyncClient, keys: Keys, database: Database
) -> None:
    letter = await dead_letter(database)
    await log_in(browser, keys.operate)

    response = await browser.post(f"/console/dead-letters/{letter}/purge", data={"csrf": "0" * 64})

    assert response.status_code == 403
    assert await DeadLetters(database).get(letter) is not None


async def test_a_read_key_sees_no_buttons_and_cannot_press_one(
    browser: httpx.AsyncClient, keys: Keys, database: Database
) -> None:
    letter = await dead_letter(database)
    await log_in(browser, keys.read)
    page = await browser.get("/console/dead-letters")

    response = await browser.post(
        f"/console/dead-letters/{letter}/replay", data={"csrf": csrf_of(page.text)}
    )

    assert "/replay" not in page.text.split("<main", 1)[1]
    assert response.status_code == 403
    stored = await DeadLetters(database).get(letter)
    assert stored is not None
    assert stored.state == "dead"


async def test_a_stranger_pressing_a_button_is_sent_to_log_in(
    browser: httpx.AsyncClient, database: Database
) -> None:
    letter = await dead_letter(database)

    response = await browser.post(f"/console/dead-letters/{letter}/purge")

    assert response.status_code == 303
    assert await DeadLetters(database).get(letter) is not None


async def test_an_operator_releases_a_parked_webhook(
    browser: httpx.AsyncClient, keys: Keys, database: Database
) -> None:
    parked = await stored_webhook(database, status="parked")
    await log_in(browser, keys.operate)
    page = await browser.get("/console/parked")
    assert f'data-webhook="{parked}"' in page.text

    response = await browser.post(
        f"/console/webhooks/{parked}/replay",
        data={"csrf": csrf_of(page.text), "back": "https://evil.example/"},
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/console/webhooks?notice=replay-queued"


async def test_an_operator_forces_a_breaker_open_and_closes_it(
    settings: Settings, database: Database, keys: Keys
) -> None:
    with EchoServer() as echo:
        configured = settings.model_copy(
            update={"services": {"catalog": ServiceSettings(base_url=echo.url, critical=False)}}
        )
        app = create_app(configured, database=database)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client,
        ):
            await log_in(client, keys.operate)
            page = await client.get("/console")
            assert 'action="/console/breakers/catalog/open"' in page.text
            token = csrf_of(page.text)

            opened = await client.post("/console/breakers/catalog/open", data={"csrf": token})
            shown = await client.get(opened.headers["location"])
            unknown = await client.post("/console/breakers/nope/open", data={"csrf": token})
            bogus = await client.post("/console/breakers/catalog/explode", data={"csrf": token})
            closed = await client.post("/console/breakers/catalog/close", data={"csrf": token})

            assert opened.status_code == 303
            assert opened.headers["location"] == "/console?notice=breaker-open"
            assert "The breaker was forced open." in shown.text
            row = shown.text.split('data-dependency="catalog"', 1)[1].split("</tr>", 1)[0]
            assert '<span class="badge open">open</span>' in row
            assert (unknown.status_code, bogus.status_code) == (404, 404)
            assert closed.status_code == 303
            state = app.state.seawall
            assert isinstance(state, ServiceState)
            breaker = state.services["catalog"].breaker
            assert breaker is not None
            assert breaker.state.value == "closed"
