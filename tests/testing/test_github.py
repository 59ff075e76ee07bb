"""`FakeGitHub`: repository webhooks, the deliveries API and real deliveries."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from seawall.errors import InvalidSignature
from seawall.testing import EchoServer, FakeClock, FakeGitHub
from seawall.webhooks import verify

TOKEN = "ghp_fake"
SECRET = "It's a Secret to Everybody"
START = 1_800_000_000.0
NEXT_LINK = re.compile(r'<([^>]+)>; rel="next"')


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall_start=START)


@pytest.fixture
def github(clock: FakeClock) -> Iterator[FakeGitHub]:
    with FakeGitHub(clock=clock) as fake:
        yield fake


@pytest.fixture
def api(github: FakeGitHub) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/vnd.github+json"}
    with httpx.Client(base_url=github.url, headers=headers, timeout=5.0) as http:
        yield http


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def add_issues(
    github: FakeGitHub, clock: FakeClock, hook: int, count: int
) -> list[dict[str, object]]:
    """*count* ``issues`` deliveries one minute apart, oldest first."""
    added = []
    for n in range(count):
        added.append(
            github.add_delivery("octo", "repo", hook, "issues", {"action": "opened", "n": n})
        )
        clock.advance(60)
    return added


def deliveries_path(hook: int) -> str:
    return f"/repos/octo/repo/hooks/{hook}/deliveries"


# --- listing and paging -------------------------------------------------------------


def test_deliveries_are_listed_newest_first_and_paged_through_the_link_header(
    github: FakeGitHub, clock: FakeClock, api: httpx.Client
) -> None:
    hook = github.add_hook("octo", "repo")
    added = add_issues(github, clock, hook, 5)

    pages, links = [], []
    response = api.get(deliveries_path(hook), params={"per_page": 2})
    while True:
        pages.append([item["id"] for item in response.json()])
        link = NEXT_LINK.fullmatch(response.headers.get("link", ""))
        if link is None:
            break
        links.append(link.group(1))
        response = api.get(link.group(1))

    assert pages == [
        [added[4]["id"], added[3]["id"]],
        [added[2]["id"], added[1]["id"]],
        [added[0]["id"]],
    ]
    pattern = (
        rf"{re.escape(github.url)}/repos/octo/repo/hooks/{hook}/deliveries\?per_page=2&cursor=\S+"
    )
    assert all(re.fullmatch(pattern, link) for link in links)


def test_per_page_defaults_to_30_and_is_capped_at_100(
    github: FakeGitHub, clock: FakeClock, api: httpx.Client
) -> None:
    hook = github.add_hook("octo", "repo")
    add_issues(github, clock, hook, 101)

    default = api.get(deliveries_path(hook))
    capped = api.get(deliveries_path(hook), params={"per_page": 500})
    last = api.get(deliveries_path(hook), params={"per_page": 100, "cursor": f"v1_{0}"})

    assert len(default.json()) == 30
    assert len(capped.json()) == 100
    assert "per_page=100&" in capped.headers["link"]
    assert last.status_code == 400


def test_a_cursor_the_fake_never_gave_is_a_400(github: FakeGitHub, api: httpx.Client) -> None:
    hook = github.add_hook("octo", "repo")

    response = api.get(deliveries_path(hook), params={"cursor": "not-a-cursor"})

    assert response.status_code == 400
    assert response.json()["message"] == "Invalid cursor"


def test_a_delivery_is_listed_with_githubs_fields(github: FakeGitHub, api: httpx.Client) -> None:
    hook = github.add_hook("octo", "repo")
    added = github.add_delivery(
        "octo", "repo", hook, "issues", {"action": "opened"}, status_code=500
    )

    (item,) = api.get(deliveries_path(hook)).json()

    assert item == {
        "id": added["id"],
        "guid": added["guid"],
        "delivered_at": "2027-01-15T08:00:00Z",
        "redelivery": False,
        "duration": 0.0,
        "status": "Internal Server Error",
        "status_code": 500,
        "event": "issues",
        "action": "opened",
        "installation_id": None,
        "repository_id": added["repository_id"],
        "throttled_at": None,
    }
    assert isinstance(item["id"], int)
    assert item["id"] > 2**31


def test_deliveries_are_ordered_by_when_they_were_made(
    github: FakeGitHub, api: httpx.Client
) -> None:
    hook = github.add_hook("octo", "repo")
    recent = github.add_delivery("octo", "repo", hook, "push", {"ref": "main"})
    earlier = github.add_delivery(
        "octo", "repo", hook, "push", {"ref": "dev"}, delivered_at=START - 3600
    )

    items = api.get(deliveries_path(hook)).json()

    assert [item["id"] for item in items] == [recent["id"], earlier["id"]]
    assert [d["id"] for d in github.deliveries("octo", "repo", hook)] == [
        recent["id"],
        earlier["id"],
    ]


def test_deliveries_older_than_three_days_are_gone(
    github: FakeGitHub, clock: FakeClock, api: httpx.Client
) -> None:
    hook = github.add_hook("octo", "repo")
    old = github.add_delivery("octo", "repo", hook, "issues", {"action": "opened"})
    clock.advance(timedelta(days=3, seconds=1).total_seconds())
    new = github.add_delivery("octo", "repo", hook, "issues", {"action": "closed"})

    listed = api.get(deliveries_path(hook)).json()
    detail = api.get(f"{deliveries_path(hook)}/{old['id']}")

    assert [item["id"] for item in listed] == [new["id"]]
    assert detail.status_code == 404


# --- one delivery -------------------------------------------------------------------


def test_the_delivery_detail_carries_a_signature_that_verifies(
    github: FakeGitHub, api: httpx.Client
) -> None:
    hook = github.add_hook("octo", "repo", secret=SECRET)
    payload = {"action": "opened", "issue": {"number": 7, "title": "café ☕", "score": 1.5}}
    added = github.add_delivery("octo", "repo", hook, "issues", payload)

    detail = api.get(f"{deliveries_path(hook)}/{added['id']}").json()

    request = detail["request"]
    body = json.dumps(request["payload"], separators=(",", ":")).encode()
    assert body == added["raw_body"]
    assert request["payload"] == payload
    verify("github", request["headers"], body, [SECRET])
    with pytest.raises(InvalidSignature):
        verify("github", request["headers"], body, ["another secret"])
    assert request["headers"]["X-GitHub-Delivery"] == detail["guid"] == added["guid"]
    assert request["headers"]["X-GitHub-Event"] == "issues"
    assert request["headers"]["X-GitHub-Hook-ID"] == str(hook)
    assert detail["response"] == {"headers": {}, "payload": ""}
    assert {k: v for k, v in added.items() if k != "raw_body"} == detail


def test_a_hook_without_a_secret_sends_no_signature(github: FakeGitHub, api: httpx.Client) -> None:
    hook = github.add_hook("octo", "repo")
    added = github.add_delivery("octo", "repo", hook, "push", {"ref": "main"})

    headers = api.get(f"{deliveries_path(hook)}/{added['id']}").json()["request"]["headers"]

    assert "X-Hub-Signature-256" not in headers
    assert headers["Content-Type"] == "application/json"


def test_the_action_comes_from_the_payload_unless_given(github: FakeGitHub) -> None:
    hook = github.add_hook("octo", "repo")

    from_payload = github.add_delivery("octo", "repo", hook, "issues", {"action": "edited"})
    given = github.add_delivery("octo", "repo", hook, "issues", {"action": "x"}, action="closed")
    none = github.add_delivery("octo", "repo", hook, "push", {"ref": "main"})

    assert (from_payload["action"], given["action"], none["action"]) == ("edited", "closed", None)


def test_a_redelivery_request_is_accepted_and_recorded(
    github: FakeGitHub, api: httpx.Client
) -> None:
    hook = github.add_hook("octo", "repo")
    added = github.add_delivery("octo", "repo", hook, "issues", {"action": "opened"}, status_code=0)

    response = api.post(f"{deliveries_path(hook)}/{added['id']}/attempts")
    missing = api.post(f"{deliveries_path(hook)}/1/attempts")

    assert (response.status_code, response.json()) == (202, {})
    assert missing.status_code == 404
    assert github.redelivery_requests == [
        {
            "owner": "octo",
            "repo": "repo",
            "hook_id": hook,
            "delivery_id": added["id"],
            "guid": added["guid"],
        }
    ]


# --- auth and not found -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "Requires authentication"),
        ({"Authorization": "Bearer ghp_wrong"}, 401, "Bad credentials"),
        ({"Authorization": f"Basic {TOKEN}"}, 401, "Bad credentials"),
        ({"Authorization": f"token {TOKEN}"}, 200, None),
        ({"Authorization": f"Bearer {TOKEN}"}, 200, None),
    ],
)
def test_the_token_is_required_as_bearer_or_token(
    github: FakeGitHub, headers: dict[str, str], status: int, message: str | None
) -> None:
    hook = github.add_hook("octo", "repo")

    response = httpx.get(f"{github.url}{deliveries_path(hook)}", headers=headers)

    assert response.status_code == status
    if message is not None:
        assert response.json()["message"] == message
        assert response.json()["documentation_url"].startswith("https://docs.github.com/")


@pytest.mark.parametrize(
    "path",
    [
        "/repos/octo/repo/hooks/999/deliveries",
        "/repos/octo/other/hooks/{hook}/deliveries",
        "/repos/octo/repo/hooks/abc/deliveries",
        "/repos/octo/repo/hooks/{hook}/deliveries/42",
        "/repos/octo/repo/hooks/{hook}/deliveries/{other}",
        "/repos/nobody/repo/hooks",
    ],
)
def test_unknown_hooks_and_deliveries_are_a_404(
    github: FakeGitHub, api: httpx.Client, path: str
) -> None:
    hook = github.add_hook("octo", "repo")
    second = github.add_hook("octo", "repo")
    other = github.add_delivery("octo", "repo", second, "push", {"ref": "main"})

    response = api.get(path.format(hook=hook, other=other["id"]))

    assert response.status_code == 404
    assert response.json()["message"] == "Not Found"


def test_owner_and_repository_names_ignore_case(github: FakeGitHub, api: httpx.Client) -> None:
    hook = github.add_hook("Octo", "Repo")
    github.add_delivery("octo", "REPO", hook, "push", {"ref": "main"})

    response = api.get(f"/repos/OCTO/repo/hooks/{hook}/deliveries")

    assert len(response.json()) == 1


def test_hooks_are_listed_with_their_url_and_a_masked_secret(
    github: FakeGitHub, api: httpx.Client
) -> None:
    hook = github.add_hook(
        "octo", "repo", url="https://seawall.example/webhooks/github", secret=SECRET
    )

    (listed,) = api.get("/repos/octo/repo/hooks").json()
    one = api.get(f"/repos/octo/repo/hooks/{hook}").json()

    assert listed == one
    assert (one["id"], one["config"]["url"]) == (hook, "https://seawall.example/webhooks/github")
    assert one["config"]["secret"] == "********"
    assert one["deliveries_url"] == f"{github.url}{deliveries_path(hook)}"


def test_the_token_and_secrets_are_not_in_the_repr() -> None:
    fake = FakeGitHub(token="ghp_very_secret_token")
    fake.add_hook("octo", "repo", secret="hook-secret-value")

    text = repr(fake) + repr(vars(fake))

    assert "very_secret" not in text
    assert "hook-secret-value" not in text


# --- helpers: misuse ----------------------------------------------------------------


def test_helpers_refuse_misuse(github: FakeGitHub) -> None:
    hook = github.add_hook("octo", "repo", 7)

    with pytest.raises(ValueError, match="taken"):
        github.add_hook("other", "repo", 7)
    with pytest.raises(KeyError, match="add_hook"):
        github.add_delivery("octo", "repo", 8, "push", {})
    with pytest.raises(ValueError, match="aware"):
        github.add_delivery("octo", "repo", hook, "push", {}, delivered_at=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="no url"):
        github.deliver("octo", "repo", hook, "push", {})
    assert github.add_hook("octo", "repo") == 8


def test_an_aware_datetime_sets_when_a_delivery_was_made(github: FakeGitHub) -> None:
    hook = github.add_hook("octo", "repo")

    added = github.add_delivery(
        "octo", "repo", hook, "push", {}, delivered_at=datetime(2027, 1, 14, 8, tzinfo=UTC)
    )

    assert added["delivered_at"] == "2027-01-14T08:00:00Z"


# --- real deliveries ----------------------------------------------------------------


def test_deliver_posts_a_signed_delivery_and_records_the_answer(
    github: FakeGitHub, echo: EchoServer, api: httpx.Client
) -> None:
    hook = github.add_hook("octo", "repo", url=f"{echo.url}/echo", secret=SECRET)

    delivery = github.deliver("octo", "repo", hook, "issues", {"action": "opened", "n": 1})

    (received,) = echo.requests
    verify("github", received.headers, received.body, [SECRET])
    assert received.body == delivery["raw_body"]
    assert received.headers["X-GitHub-Delivery"] == delivery["guid"]
    assert received.headers["X-GitHub-Event"] == "issues"
    assert received.headers["X-GitHub-Hook-ID"] == str(hook)
    assert received.headers["User-Agent"] == "GitHub-Hookshot/fake"
    assert (delivery["status_code"], delivery["status"], delivery["action"]) == (
        200,
        "OK",
        "opened",
    )
    assert delivery["url"] == f"{echo.url}/echo"
    assert json.loads(delivery["response"]["payload"])["method"] == "POST"
    assert delivery["response"]["headers"]["Content-Type"] == "application/json"
    listed = api.get(deliveries_path(hook)).json()
    assert [(item["guid"], item["status_code"]) for item in listed] == [(delivery["guid"], 200)]


def test_deliver_to_a_closed_port_records_a_failed_connection(
    github: FakeGitHub, closed_port: int, api: httpx.Client
) -> None:
    hook = github.add_hook("octo", "repo", url=f"http://127.0.0.1:{closed_port}/hook")

    delivery = github.deliver("octo", "repo", hook, "push", {"ref": "main"})

    assert (delivery["status_code"], delivery["status"]) == (0, "failed to connect")
    assert delivery["response"] == {"headers": {}, "payload": None}
    detail = api.get(f"{deliveries_path(hook)}/{delivery['id']}").json()
    assert (detail["status_code"], detail["status"]) == (0, "failed to connect")


def test_deliver_records_an_error_answer_and_a_timeout(echo: EchoServer) -> None:
    with FakeGitHub(delivery_timeout=0.05) as github:
        hook = github.add_hook("octo", "repo", url=f"{echo.url}/echo")
        echo.chaos.fail_next(1, status=500)
        failed = github.deliver("octo", "repo", hook, "push", {"ref": "main"})
        echo.chaos.hang_next(1)
        timed_out = github.deliver("octo", "repo", hook, "push", {"ref": "main"})

    assert (failed["status_code"], failed["status"]) == (500, "Internal Server Error")
    assert (timed_out["status_code"], timed_out["status"]) == (0, "timed out")


def test_a_spawned_github_fake_answers_with_its_errors() -> None:
    with FakeGitHub.spawn() as child:
        anonymous = httpx.get(f"{child.url}/repos/octo/repo/hooks/1/deliveries")
        unknown = httpx.get(
            f"{child.url}/repos/octo/repo/hooks/1/deliveries",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )

    assert (anonymous.status_code, unknown.status_code) == (401, 404)
