"""Whatever a sender puts in the headers and body, `verify` answers only with `InvalidSignature`.

Hypothesis mixes the header names each provider reads (in any case) with values
that are random, near-valid (the right prefixes and shapes) or oversized, and
random bodies and URLs. `delivery_id` must never raise at all.
"""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seawall.errors import InvalidSignature
from seawall.webhooks import PROVIDERS, HmacScheme, delivery_id, verify
from tests.webhooks.signing import STANDARD_SECRET

NAMES = [
    "X-Hub-Signature-256",
    "X-GitHub-Delivery",
    "Stripe-Signature",
    "X-Shopify-Hmac-Sha256",
    "X-Shopify-Webhook-Id",
    "X-Slack-Signature",
    "X-Slack-Request-Timestamp",
    "X-Twilio-Signature",
    "I-Twilio-Idempotency-Token",
    "Content-Type",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "X-Sig",
    "X-Ts",
    "X-Id",
]

SCHEMES: list[str | HmacScheme] = [
    *PROVIDERS,
    HmacScheme(header="X-Sig", prefix="sha256=", id_header="X-Id", template="{id}.{body}"),
    HmacScheme(
        header="X-Sig",
        algorithm="sha512",
        encoding="base64",
        timestamp_header="X-Ts",
        template="{timestamp}:{body}",
    ),
]

B64 = st.binary(min_size=0, max_size=70).map(lambda b: base64.b64encode(b).decode())
HEX = st.binary(min_size=0, max_size=70).map(bytes.hex)
FRAGMENT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["t=", "v1=", "v0=", "v1,", "v1a,", "sha256=", ",", " ", "=", "1700000000", "0", "-1"]
    ),
    B64,
    HEX,
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
)
VALUE = st.one_of(
    st.lists(FRAGMENT, max_size=8).map("".join),
    st.just("a" * 9000),
    st.just("application/x-www-form-urlencoded"),
)
HEADERS = st.dictionaries(
    st.sampled_from(NAMES).flatmap(
        lambda n: st.sampled_from([n, n.lower(), n.upper(), n.swapcase()])
    )
    | st.text(max_size=10),
    VALUE,
    max_size=8,
)
BODY = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.sampled_from(
        [
            b"{",
            b'{"id": 1}',
            b'{"id": "evt_1", "event_id": "Ev1"}',
            b"a=%FF",
            b"a=\xff&b=",
            b"[" * 2000,
        ]
    ),
)
URL = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda host, port, query: f"https://{host}{port}/hook?{query}",
        st.sampled_from(["example.com", "[::1]", "user@host", "h"]),
        st.sampled_from(["", ":443", ":8080", ":", ":x"]),
        st.sampled_from(["", "bodySHA256=", "bodySHA256=ab&bodySHA256=cd", "a=1"]),
    ),
)
SECRETS = ["whsec_plain", STANDARD_SECRET]

# Near-valid headers: the names each scheme reads, with values of the right shape,
# so that examples reach the MAC and the time checks, not only "missing header".
SECONDS = st.integers(min_value=0, max_value=4 * 10**9).map(str) | FRAGMENT
HEX32 = st.binary(min_size=32, max_size=32).map(bytes.hex) | HEX
B64_32 = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode()) | B64
B64_20 = st.binary(min_size=20, max_size=20).map(lambda b: base64.b64encode(b).decode()) | B64
STRIPE_ITEM = st.one_of(SECONDS.map("t={}".format), HEX32.map("v1={}".format), FRAGMENT)
STANDARD_TOKEN = st.one_of(B64_32.map("v1,{}".format), B64.map("v1a,{}".format), FRAGMENT)


def shaped(scheme: str | HmacScheme) -> st.SearchStrategy[dict[str, str]]:
    family = st.sampled_from(["webhook", "svix"])
    by_scheme: dict[str, st.SearchStrategy[dict[str, str]]] = {
        "github": st.fixed_dictionaries({"X-Hub-Signature-256": HEX32.map("sha256={}".format)}),
        "stripe": st.fixed_dictionaries(
            {"Stripe-Signature": st.lists(STRIPE_ITEM, max_size=6).map(",".join)}
        ),
        "shopify": st.fixed_dictionaries({"X-Shopify-Hmac-Sha256": B64_32}),
        "slack": st.fixed_dictionaries(
            {"X-Slack-Signature": HEX32.map("v0={}".format), "X-Slack-Request-Timestamp": SECONDS}
        ),
        "standard": family.flatmap(
            lambda f: st.fixed_dictionaries(
                {
                    f"{f}-id": st.text(max_size=20),
                    f"{f}-timestamp": SECONDS,
                    f"{f}-signature": st.lists(STANDARD_TOKEN, max_size=5).map(" ".join),
                }
            )
        ),
        "twilio": st.fixed_dictionaries(
            {
                "X-Twilio-Signature": B64_20,
                "Content-Type": st.sampled_from(
                    ["application/x-www-form-urlencoded; charset=utf-8", "application/json", ""]
                ),
            }
        ),
    }
    if isinstance(scheme, HmacScheme):
        return st.fixed_dictionaries(
            {"X-Sig": HEX32.map("sha256={}".format) | B64, "X-Id": FRAGMENT, "X-Ts": SECONDS}
        )
    return by_scheme[scheme]


def request_headers(scheme: str | HmacScheme) -> st.SearchStrategy[dict[str, str]]:
    return HEADERS | st.builds(lambda a, b: a | b, HEADERS, shaped(scheme)) | shaped(scheme)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    scheme=st.sampled_from(SCHEMES),
    body=BODY,
    url=URL,
    now=st.floats(min_value=0, max_value=4e9),
)
def test_random_requests_only_ever_raise_invalid_signature(
    data: st.DataObject, scheme: str | HmacScheme, body: bytes, url: str, now: float
) -> None:
    headers = data.draw(request_headers(scheme), label="headers")
    secrets = [STANDARD_SECRET] if scheme == "standard" else SECRETS

    try:
        verify(scheme, headers, body, secrets, now=now, url=url)
    except InvalidSignature as error:
        outcome = error.reason
    else:
        outcome = "accepted"

    assert outcome != "accepted"


@settings(max_examples=200, deadline=None)
@given(scheme=st.sampled_from(SCHEMES), headers=HEADERS, body=BODY)
def test_delivery_id_never_raises(
    scheme: str | HmacScheme, headers: dict[str, str], body: bytes
) -> None:
    found = delivery_id(scheme, headers, body)

    assert found is None or isinstance(found, str)
