"""`FakeCRM`: OAuth client credentials, customers and tickets, and the change feed."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from seawall.errors import InvalidSignature
from seawall.testing import FakeClock, FakeCRM
from seawall.webhooks import verify

CLIENT = ("seawall-crm-client", "seawall-crm-secret")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall_start=1_800_000_000.0)


@pytest.fixture
def crm(clock: FakeClock) -> Iterator[FakeCRM]:
    with FakeCRM(clock=clock) as fake:
        yield fake


@pytest.fixture
def api(crm: FakeCRM) -> Iterator[httpx.Client]:
    """A client already holding a token."""
    token = crm.issue_token()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{crm.url}/api/v1", headers=headers, timeout=5.0) as http:
        yield http


def token_form(**extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": CLIENT[0],
        "client_secret": CLIENT[1],
        **extra,
    }


# --- tokens -------------------------------------------------------------------------


def test_client_credentials_in_the_form_get_a_bearer_token(crm: FakeCRM) -> None:
    response = httpx.post(f"{crm.url}/oauth/token", data=token_form())

    token = response.json()
    assert response.status_code == 200
    assert (token["token_type"], token["expires_in"]) == ("Bearer", 3600)
    assert token["access_token"]
    assert crm.token_requests == 1


def test_client_credentials_as_http_basic_are_accepted_too(crm: FakeCRM) -> None:
    response = httpx.post(
        f"{crm.url}/oauth/token", data={"grant_type": "client_credentials"}, auth=CLIENT
    )

    assert response.status_code == 200


@pytest.mark.parametrize(
    "form",
    [token_form(client_secret="wrong"), token_form(client_id="other"), {"grant_type": "x"}],
)
def test_wrong_client_credentials_are_a_401_invalid_client(
    crm: FakeCRM, form: dict[str, str]
) -> None:
    response = httpx.post(f"{crm.url}/oauth/token", data=form)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert crm.token_requests == 1


@pytest.mark.parametrize(
    ("grant", "error"),
    [("", "invalid_request"), ("password", "unsupported_grant_type")],
)
def test_only_the_client_credentials_grant_is_supported(
    crm: FakeCRM, grant: str, error: str
) -> None:
    response = httpx.post(f"{crm.url}/oauth/token", data=token_form(grant_type=grant))

    assert (response.status_code, response.json()["error"]) == (400, error)


def test_a_token_from_the_endpoint_opens_the_api(crm: FakeCRM) -> None:
    token = httpx.post(f"{crm.url}/oauth/token", data=token_form()).json()["access_token"]

    response = httpx.get(f"{crm.url}/api/v1/tickets", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer made-up"}])
def test_the_api_needs_a_valid_token(crm: FakeCRM, headers: dict[str, str]) -> None:
    response = httpx.get(f"{crm.url}/api/v1/tickets", headers=headers)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_revoked_tokens_get_a_401_until_the_client_fetches_a_new_one(
    crm: FakeCRM, api: httpx.Client
) -> None:
    before = api.get("/tickets")
    crm.revoke_tokens()
    revoked = api.get("/tickets")
    fresh = httpx.post(f"{crm.url}/oauth/token", data=token_form()).json()["access_token"]
    after = api.get("/tickets", headers={"Authorization": f"Bearer {fresh}"})

    assert (before.status_code, revoked.status_code, after.status_code) == (200, 401, 200)


def test_tokens_expire_after_their_lifetime_on_the_fakes_clock(
    crm: FakeCRM, api: httpx.Client, clock: FakeClock
) -> None:
    crm.token_lifetime = 60
    token = httpx.post(f"{crm.url}/oauth/token", data=token_form()).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}

    clock.advance(59)
    valid = api.get("/tickets", headers=headers)
    clock.advance(1)
    expired = api.get("/tickets", headers=headers)

    assert token["expires_in"] == 60
    assert (valid.status_code, expired.status_code) == (200, 401)


def test_a_non_positive_token_lifetime_is_refused(crm: FakeCRM) -> None:
    with pytest.raises(ValueError, match="token_lifetime"):
        crm.token_lifetime = 0


def test_chaos_scoped_to_the_api_leaves_the_token_endpoint_alone(crm: FakeCRM) -> None:
    crm.chaos.fail_next(1, status=503, path_prefix="/api/")

    token = httpx.post(f"{crm.url}/oauth/token", data=token_form())
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    failed = httpx.get(f"{crm.url}/api/v1/tickets", headers=headers)

    assert (token.status_code, failed.status_code) == (200, 503)


def test_the_client_secret_is_not_in_the_repr() -> None:
    fake = FakeCRM(client_secret="top-secret-value")

    assert "top-secret-value" not in repr(fake) + repr(vars(fake))


# --- records ------------------------------------------------------------------------


def test_a_customer_and_a_ticket_are_created_read_and_listed(api: httpx.Client) -> None:
    customer = api.post("/customers", json={"Name": "Ada", "Email": "ada@example.com"})
    ticket = api.post(
        "/tickets",
        json={"Subject": "Printer on fire", "Urgency": "High", "CustomerId": customer.json()["Id"]},
    )
    listed = api.get("/tickets").json()

    assert customer.status_code == ticket.status_code == 201
    assert customer.json()["Id"].startswith("001")
    assert customer.json()["Tier"] == "Standard"
    record = ticket.json()
    assert record["Id"].startswith("500")
    assert len(record["Id"]) == 18
    assert (record["State"], record["Urgency"], record["IsDeleted"]) == ("New", "High", False)
    assert record["LastModifiedDate"] == "2027-01-15T08:00:00.000Z"
    assert api.get(f"/tickets/{record['Id']}").json() == record
    assert (listed["totalSize"], listed["records"], listed["done"]) == (1, [record], True)


def test_patch_changes_fields_and_returns_the_record(api: httpx.Client, crm: FakeCRM) -> None:
    ticket = crm.add_ticket(Subject="Slow", State="New")

    response = api.patch(f"/tickets/{ticket['Id']}", json={"State": "Working"})

    assert response.status_code == 200
    assert response.json()["State"] == "Working"
    assert crm.tickets[ticket["Id"]]["State"] == "Working"


def test_delete_hides_a_ticket_but_keeps_it_flagged(api: httpx.Client, crm: FakeCRM) -> None:
    ticket = crm.add_ticket(Subject="Spam")

    deleted = api.delete(f"/tickets/{ticket['Id']}")
    fetched = api.get(f"/tickets/{ticket['Id']}")
    again = api.delete(f"/tickets/{ticket['Id']}")

    assert deleted.status_code == 204
    assert (fetched.status_code, fetched.json()[0]["errorCode"]) == (404, "ENTITY_IS_DELETED")
    assert again.status_code == 404
    assert api.get("/tickets").json()["records"] == []
    assert crm.tickets[ticket["Id"]]["IsDeleted"] is True


def test_lists_filter_on_fields_given_as_query_parameters(api: httpx.Client, crm: FakeCRM) -> None:
    crm.add_ticket(Subject="a", State="New")
    wanted = crm.add_ticket(Subject="b", State="Escalated")

    response = api.get("/tickets", params={"State": "Escalated"})

    assert response.json()["records"] == [wanted]


def test_unknown_enum_values_stored_by_a_test_are_served_as_they_are(
    api: httpx.Client, crm: FakeCRM
) -> None:
    ticket = crm.add_ticket(Subject="odd", Urgency="Apocalyptic", State="Snoozed")

    served = api.get(f"/tickets/{ticket['Id']}").json()

    assert (served["Urgency"], served["State"]) == ("Apocalyptic", "Snoozed")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"Description": "no subject"}, "REQUIRED_FIELD_MISSING"),
        ({"Subject": "x", "Colour": "red"}, "INVALID_FIELD"),
        ({"Subject": "x", "Id": "500"}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
        ({"Subject": 42}, "JSON_PARSER_ERROR"),
        (["not", "an", "object"], "JSON_PARSER_ERROR"),
    ],
)
def test_invalid_tickets_are_a_400_with_salesforce_errors(
    api: httpx.Client, crm: FakeCRM, body: Any, code: str
) -> None:
    response = api.post("/tickets", json=body)

    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == code
    assert crm.tickets == {}


def test_patch_cannot_blank_a_required_field(api: httpx.Client, crm: FakeCRM) -> None:
    customer = crm.add_customer(Name="Bob")

    response = api.patch(f"/customers/{customer['Id']}", json={"Name": ""})

    assert response.json()[0]["errorCode"] == "REQUIRED_FIELD_MISSING"


def test_external_refs_are_unique_among_live_tickets(api: httpx.Client, crm: FakeCRM) -> None:
    first = api.post("/tickets", json={"Subject": "a", "ExternalRef": "case-1"}).json()

    duplicate = api.post("/tickets", json={"Subject": "b", "ExternalRef": "case-1"})
    api.delete(f"/tickets/{first['Id']}")
    after_delete = api.post("/tickets", json={"Subject": "c", "ExternalRef": "case-1"})

    assert duplicate.status_code == 400
    assert duplicate.json()[0]["errorCode"] == "DUPLICATE_VALUE"
    assert first["Id"] in duplicate.json()[0]["message"]
    assert after_delete.status_code == 201


def test_a_missing_record_is_a_404_not_found(api: httpx.Client) -> None:
    response = api.get("/customers/001000000000999AAA")

    assert (response.status_code, response.json()[0]["errorCode"]) == (404, "NOT_FOUND")


def test_helpers_refuse_unknown_fields_and_unknown_ids(crm: FakeCRM) -> None:
    with pytest.raises(TypeError, match="Colour"):
        crm.add_ticket(Subject="x", Colour="red")
    with pytest.raises(KeyError):
        crm.update_ticket("500000000000999AAA", State="Closed")


# --- the change feed --------------------------------------------------------------------


def test_every_change_enters_the_feed_in_order(
    api: httpx.Client, crm: FakeCRM, clock: FakeClock
) -> None:
    customer = crm.add_customer(Name="Ada")
    ticket = api.post("/tickets", json={"Subject": "Broken", "CustomerId": customer["Id"]}).json()
    clock.advance(60)
    api.patch(f"/tickets/{ticket['Id']}", json={"State": "Closed"})
    crm.delete_ticket(ticket["Id"])

    feed = api.get("/changes").json()

    changes = feed["changes"]
    assert [(c["object"], c["id"], c["deleted"]) for c in changes] == [
        ("customer", customer["Id"], False),
        ("ticket", ticket["Id"], False),
        ("ticket", ticket["Id"], False),
        ("ticket", ticket["Id"], True),
    ]
    assert [c["record"].get("State") for c in changes[1:]] == ["New", "Closed", "Closed"]
    assert changes[2]["record"]["LastModifiedDate"] == "2027-01-15T08:01:00.000Z"
    assert [int(c["cursor"]) for c in changes] == [1, 2, 3, 4]
    assert (feed["next_cursor"], feed["has_more"]) == ("4", False)
    assert crm.changes == changes


def test_the_feed_pages_with_limit_and_since(api: httpx.Client, crm: FakeCRM) -> None:
    for index in range(5):
        crm.add_ticket(Subject=f"t{index}")

    first = api.get("/changes", params={"limit": 2}).json()
    second = api.get("/changes", params={"since": first["next_cursor"], "limit": 2}).json()
    third = api.get("/changes", params={"since": second["next_cursor"], "limit": 2}).json()
    idle = api.get("/changes", params={"since": third["next_cursor"]}).json()

    subjects = [c["record"]["Subject"] for page in (first, second, third) for c in page["changes"]]
    assert subjects == ["t0", "t1", "t2", "t3", "t4"]
    assert [page["has_more"] for page in (first, second, third)] == [True, True, False]
    assert idle == {"changes": [], "next_cursor": "5", "has_more": False}


@pytest.mark.parametrize("params", [{"since": "abc"}, {"limit": "0"}, {"limit": "5000"}])
def test_a_bad_cursor_or_limit_is_a_400(api: httpx.Client, params: dict[str, str]) -> None:
    response = api.get("/changes", params=params)

    assert response.status_code == 400


def test_the_feed_needs_a_token(crm: FakeCRM) -> None:
    response = httpx.get(f"{crm.url}/api/v1/changes")

    assert response.status_code == 401


def test_many_tickets_are_seeded_at_once_and_each_enters_the_feed(
    api: httpx.Client, crm: FakeCRM
) -> None:
    ids = crm.add_tickets(1500, Urgency="High")

    page = api.get("/changes", params={"since": "1000", "limit": 1000}).json()

    assert len(ids) == len(set(ids)) == 1500
    assert crm.tickets[ids[-1]]["Subject"] == "Ticket 1500"
    assert [change["id"] for change in page["changes"]] == ids[1000:]
    assert page["changes"][0]["record"]["Urgency"] == "High"
    assert (page["next_cursor"], page["has_more"]) == ("1500", False)


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.received.clear()
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks"
    server.shutdown()
    server.server_close()


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_a_webhook_names_the_record_and_is_signed_as_standard_webhooks(
    crm: FakeCRM, receiver: str
) -> None:
    ticket = crm.add_ticket(Subject="Changed")
    crm.delete_ticket(ticket["Id"])

    status = crm.send_webhook(receiver, WEBHOOK_SECRET, ticket["Id"], timestamp=1_700_000_000)

    headers, body = _Receiver.received[0]
    verify("standard", headers, body, [WEBHOOK_SECRET], now=1_700_000_010)
    with pytest.raises(InvalidSignature):
        verify("standard", headers, body, ["whsec_" + "B" * 44], now=1_700_000_010)
    assert status == 204
    assert json.loads(body)["type"] == "ticket.deleted"
    assert json.loads(body)["data"] == {"object": "ticket", "id": ticket["Id"]}


def test_a_webhook_for_an_unknown_record_is_a_key_error(crm: FakeCRM, receiver: str) -> None:
    with pytest.raises(KeyError):
        crm.send_webhook(receiver, WEBHOOK_SECRET, "500000000000999AAA")
