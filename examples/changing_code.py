"""Changing a workflow with runs in flight: a mismatch, a patch, and a retry.

Three deploys of one workflow, ``shop.checkout``, share one store here, as three
versions of your code would share your database.

Run it with ``python examples/changing_code.py``.
"""

from __future__ import annotations

import fluxo


@fluxo.step(name="shop.charge")
def charge(order_id: str) -> str:
    return f"r-{order_id}"


@fluxo.step(name="shop.send_email")
def send_email(order_id: str) -> str:
    return f"emailed {order_id}"


@fluxo.step(name="shop.send_sms")
def send_sms(order_id: str) -> str:
    return f"texted {order_id}"


# Version 1: charge, wait for the warehouse, then e-mail the customer.
@fluxo.workflow(name="shop.checkout")
def checkout_v1(order_id: str) -> str:
    charge(order_id)
    fluxo.wait_for_signal("packed")
    return send_email(order_id)


# Version 2 texts the customer *before* waiting: a durable call where runs recorded
# by version 1 hold their wait.
@fluxo.workflow(name="shop.checkout")
def checkout_v2(order_id: str) -> str:
    charge(order_id)
    send_sms(order_id)
    fluxo.wait_for_signal("packed")
    return send_email(order_id)


# Version 3 guards the change: runs that passed this point without it keep the old path.
@fluxo.workflow(name="shop.checkout")
def checkout_v3(order_id: str) -> str:
    charge(order_id)
    if fluxo.patched("sms-before-packing"):
        send_sms(order_id)
    fluxo.wait_for_signal("packed")
    return send_email(order_id)


def deploy(store: fluxo.Store, version: fluxo.Workflow[[str], str]) -> fluxo.Engine:
    """An engine running one version of the code on the shared store."""
    return fluxo.Engine(store, workflows=[version])


store = fluxo.open_store("memory://")  # or "sqlite:///shop.db", "postgresql://..."
v1 = deploy(store, checkout_v1)
v1.start(checkout_v1.options(id="o-1"), "o-1")
v1.worker().process_one()  # o-1 charges, then waits for "packed"

v2 = deploy(store, checkout_v2)
v2.signal("o-1", "packed")
v2.worker().process_one()  # o-1 resumes under version 2...
print(v2.get_run("o-1").status)  # prints: failed
try:
    v2.handle("o-1").result()
except fluxo.NondeterminismError as exc:  # the history is left as it was
    for line in str(exc).splitlines()[1:3]:
        print(line.strip())
    # prints: the code called: step shop.send_sms
    # prints: the history has: signal_wait_started packed

v3 = deploy(store, checkout_v3)
v3.retry("o-1")  # resume o-1 from its history
v3.start(checkout_v3.options(id="o-2"), "o-2")
v3.signal("o-2", "packed")
v3.worker().process_one()
print([event.name for event in v3.history("o-1") if event.kind == "step_completed"])
# prints: ['shop.charge', 'shop.send_email']
print([event.name for event in v3.history("o-2") if event.kind == "step_completed"])
# prints: ['shop.charge', 'shop.send_sms', 'shop.send_email']
store.close()
