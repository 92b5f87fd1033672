"""Optional API keys: off by default; Bearer or X-API-Key; 401 JSON; health and the contract stay open."""

from __future__ import annotations

import pytest

from app import create_app
from config import load_config


@pytest.fixture
def keyed(tiny_registry):
    return create_app({"TESTING": True, "API_KEYS": "k-one, k-two"}, registry=tiny_registry).test_client()


def test_keys_are_off_by_default(client):
    assert load_config({})["API_KEYS"] == ()
    assert client.post("/encode", json={"texts": ["a"]}).status_code == 200


def test_keys_from_the_environment(monkeypatch, tiny_registry):
    assert load_config({"API_KEYS": " a ,b,, "})["API_KEYS"] == ("a", "b")
    monkeypatch.setenv("API_KEYS", "env-key")
    client = create_app({"TESTING": True}, registry=tiny_registry).test_client()
    assert client.get("/models").status_code == 401
    assert client.get("/models", headers={"X-API-Key": "env-key"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"X-API-Key": "k-one "},
        {"Authorization": "Basic k-one"},
        {"Authorization": "Bearer "},
        {"X-API-Key": "k-on"},
        {"X-API-Key": "k-one-and-more"},
    ],
)
def test_missing_or_wrong_key_is_a_json_401(keyed, headers):
    resp = keyed.post("/encode", json={"texts": ["a"]}, headers=headers)
    assert resp.status_code == 401 and resp.json["error"]["code"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert resp.headers["X-Request-ID"]


@pytest.mark.parametrize(
    "headers", [{"Authorization": "Bearer k-one"}, {"Authorization": "bearer k-two"}, {"X-API-Key": "k-two"}]
)
def test_either_header_with_any_key_works(keyed, headers):
    assert keyed.post("/encode", json={"texts": ["a"]}, headers=headers).status_code == 200
    assert keyed.get("/models", headers=headers).status_code == 200


def test_health_and_contract_stay_open(keyed):
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 200
    spec = keyed.get("/openapi.json")
    assert spec.status_code == 200
    assert set(spec.json["components"]["securitySchemes"]) == {"bearer", "api_key"}
    assert spec.json["paths"]["/encode"]["post"]["security"] == [{"bearer": []}, {"api_key": []}]
    assert "401" in spec.json["paths"]["/encode"]["post"]["responses"]
    assert "security" not in spec.json["paths"]["/healthz"]["get"]
    assert keyed.get("/docs/swagger/").status_code == 200


def test_auth_runs_before_the_body_is_read(keyed):
    resp = keyed.post("/encode", data=b"{not json", content_type="application/json")
    assert resp.status_code == 401


def test_comparison_is_constant_time():
    import inspect

    from app import auth

    assert "compare_digest" in inspect.getsource(auth._check_key)


def test_request_id_is_echoed_or_made(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id; Injected=1 " + "x" * 200}).headers["X-Request-ID"]
    assert len(made) == 32 and "Injected" not in made


def test_one_structured_log_line_per_request_without_the_payload(client, caplog):
    import json

    caplog.set_level("INFO", logger="app.access")
    client.post("/encode", json={"texts": ["secret words"]}, headers={"X-Request-ID": "r-1"})
    client.post("/encode", json={"texts": [""]}, headers={"X-Request-ID": "r-2"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "app.access"]
    assert [line["request_id"] for line in lines] == ["r-1", "r-2"]
    assert lines[0]["route"] == "/encode" and lines[0]["status"] == 200 and lines[0]["texts"] == 1
    assert lines[1]["status"] == 422 and lines[1]["error"] == "empty_text"
    assert all(line["latency_ms"] >= 0 for line in lines)
    assert "secret" not in caplog.text
