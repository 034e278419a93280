"""The shop's tests, under plain pytest: ``pytest examples/django_shop``."""

from django.test import Client
from orders.models import Order
from orders.views import run_id
from orders.workflows import order_flow

from fluxo.contrib.django import get_engine
from fluxo.testing import WorkflowEnvironment


def test_an_order_is_paid_once_when_the_webhook_comes() -> None:
    client = Client()
    with get_engine().worker():  # a worker in a thread: `manage.py fluxo worker` in production
        created = client.post("/orders", {"cents": 4200}, content_type="application/json")
        assert created.status_code == 201
        order_id = created.json()["id"]

        assert client.post(f"/orders/{order_id}/paid").status_code == 202
        assert get_engine().handle(run_id(order_id)).result(timeout=30) == f"ch_{order_id}"
        assert client.post(f"/orders/{order_id}/paid").status_code == 202  # sent twice: harmless

    status = client.get(f"/orders/{order_id}").json()
    assert status == {"id": order_id, "status": "paid", "times_paid": 1}


def test_the_flow_waits_for_the_payment(fluxo_env: WorkflowEnvironment) -> None:
    """The workflow alone, with ``fluxo.testing``: it runs in this thread, on the test database."""
    order = Order.objects.create(cents=990)

    handle = fluxo_env.start(order_flow, order.pk, 990)  # runs until it waits for "paid"
    order.refresh_from_db()
    assert order.status == "charged"

    fluxo_env.signal(handle, "paid")
    assert handle.result() == f"ch_{order.pk}"
    order.refresh_from_db()
    assert (order.status, order.times_paid) == ("paid", 1)


def test_a_payment_for_an_order_without_a_run_says_how_to_start_it() -> None:
    client = Client()
    order = Order.objects.create(cents=100)  # as if its start had been lost

    lost = client.post(f"/orders/{order.pk}/paid")
    assert lost.status_code == 409
    assert f"POST /orders/{order.pk}/start" in lost.json()["error"]

    started = client.post(f"/orders/{order.pk}/start")
    assert started.json()["run"] == run_id(order.pk)
    assert client.post(f"/orders/{order.pk}/start").status_code == 202  # again: the same run
    assert client.post(f"/orders/{order.pk}/paid").status_code == 202
