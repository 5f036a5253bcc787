"""JSON answers and pydantic-checked bodies, as every sandbox's control routes use them."""

from __future__ import annotations

import json
from datetime import date

import pytest
from flask import Flask
from pydantic import BaseModel, Field

from sandboxes.kit.routes import BodyError, body_as, json_response, model_route


class Knobs(BaseModel):
    seats: int = Field(10, ge=1)
    label: str = "site"


@pytest.fixture
def app() -> Flask:
    return Flask("kit-routes")


def test_json_response_is_compact_in_given_order_with_headers(app: Flask) -> None:
    with app.app_context():
        response = json_response({"b": 1, "a": [1, 2]}, 201, {"X-Trace": "t"})
    assert response.status_code == 201 and response.mimetype == "application/json"
    assert response.get_data(as_text=True) == '{"b":1,"a":[1,2]}'
    assert response.headers["X-Trace"] == "t"
    with app.app_context():
        dated = json_response({"d": date(2024, 5, 1)}, default=str)
    assert json.loads(dated.get_data()) == {"d": "2024-05-01"}


def test_body_as_lays_the_body_over_the_current_model(app: Flask) -> None:
    with app.test_request_context(json={"seats": 3}):
        assert body_as(Knobs, over=Knobs(label="x")) == Knobs(seats=3, label="x")
        assert body_as(Knobs) == Knobs(seats=3)
    with app.test_request_context(data="not json", content_type="application/json"):
        assert body_as(Knobs) == Knobs()


@pytest.mark.parametrize("payload", [{"seats": 0}, {"seats": "many"}, [1, 2]])
def test_body_as_refuses_what_the_model_refuses(app: Flask, payload: object) -> None:
    with app.test_request_context(json=payload), pytest.raises(BodyError):
        body_as(Knobs)


def test_model_route_reads_merges_validates_and_stores(app: Flask) -> None:
    state = {"knobs": Knobs()}
    model_route(app, "/_sandbox/knobs", Knobs, lambda: state["knobs"], lambda k: state.update(knobs=k))
    client = app.test_client()
    assert client.get("/_sandbox/knobs").get_json() == {"seats": 10, "label": "site"}
    assert client.post("/_sandbox/knobs", json={"label": "east"}).get_json() == {"seats": 10, "label": "east"}
    refused = client.post("/_sandbox/knobs", json={"seats": -1})
    assert refused.status_code == 400 and "seats" in refused.get_json()["error"]
    assert state["knobs"] == Knobs(label="east")
