"""X-Forwarded-For/-Proto, believed by the app itself from FORWARDED_ALLOW_IPS peers (web/forwarded.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.support import BASE_URL, FakeIdP, make_settings
from web.app import build_app
from web.forwarded import ForwardedHeaders


async def echo(request: Request) -> JSONResponse:
    """What the app downstream sees of the caller."""
    return JSONResponse(
        {
            "client": request.client.host if request.client else None,
            "scheme": request.url.scheme,
            "cert": request.headers.getlist("client-cert"),
        }
    )


def seen(peer: tuple[str, int], headers: dict[str, str], **options: Any) -> dict[str, Any]:
    options.setdefault("trusted", ["127.0.0.1", "::1"])
    app = ForwardedHeaders(Starlette(routes=[Route("/", echo)]), **options)
    with TestClient(app, client=peer) as client:
        return client.get("/", headers=headers).json()


FORWARDED = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https", "Client-Cert": ":QUJD:"}


def test_a_trusted_peer_names_the_caller_and_the_scheme():
    assert seen(("127.0.0.1", 1), FORWARDED, client_cert_header="Client-Cert") == {
        "client": "198.51.100.7",
        "scheme": "https",
        "cert": [":QUJD:"],
    }


def test_an_untrusted_peer_is_the_caller_and_its_certificate_header_is_dropped(caplog):
    caplog.set_level(logging.WARNING, logger="web.forwarded")
    assert seen(("203.0.113.5", 1), FORWARDED, client_cert_header="Client-Cert") == {
        "client": "203.0.113.5",
        "scheme": "http",
        "cert": [],
    }
    assert "client-cert header from 203.0.113.5 ignored" in caplog.text


def test_without_a_configured_certificate_header_nothing_is_dropped():
    assert seen(("203.0.113.5", 1), FORWARDED)["cert"] == [":QUJD:"]


@pytest.mark.parametrize(("trusted", "client"), [([], "127.0.0.1"), (["*"], "198.51.100.7")])
def test_no_trusted_peer_or_every_peer(trusted, client):
    result = seen(("127.0.0.1", 1), FORWARDED, trusted=trusted, client_cert_header="Client-Cert")
    assert result["client"] == client
    assert result["cert"] == ([] if not trusted else [":QUJD:"])


def test_the_dropped_header_log_is_rate_limited(caplog):
    caplog.set_level(logging.WARNING, logger="web.forwarded")
    app = ForwardedHeaders(Starlette(routes=[Route("/", echo)]), trusted=[], client_cert_header="Client-Cert")
    with TestClient(app, client=("203.0.113.5", 1)) as client:
        for _ in range(50):
            client.get("/", headers={"Client-Cert": ":QUJD:"})
    assert 1 <= len(caplog.records) <= 10


def test_the_app_believes_x_forwarded_for_from_its_gateway(idp: FakeIdP, caplog):
    caplog.set_level(logging.INFO, logger="access")
    with TestClient(build_app(make_settings()), base_url=BASE_URL, client=("127.0.0.1", 1)) as client:
        client.get("/healthz", headers={"X-Forwarded-For": "198.51.100.7"})
    with TestClient(build_app(make_settings()), base_url=BASE_URL, client=("192.0.2.1", 1)) as client:
        client.get("/healthz", headers={"X-Forwarded-For": "198.51.100.7"})
    assert [record.client for record in caplog.records if record.name == "access"] == ["198.51.100.7", "192.0.2.1"]
