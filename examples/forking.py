"""Forking a run: replay its first positions, run the rest with today's code.

Version 1 of ``ship.order`` charged the customer, reserved stock, then computed a
wrong shipping fee and e-mailed it. After the fix, ``engine.fork`` starts a new run
that keeps the charge and the reservation (they are not done again) and runs the
fee and the e-mail with the fixed code.

Run it with ``python examples/forking.py``.
"""

from __future__ import annotations

import fluxo

done: list[str] = []  # what really ran, in order


@fluxo.step(name="ship.charge")
def charge(order_id: str) -> str:
    done.append("charge")
    return f"r-{order_id}"


@fluxo.step(name="ship.reserve")
def reserve(order_id: str) -> int:
    done.append("reserve")
    return 3


@fluxo.step(name="ship.fee")
def fee_v1(items: int) -> int:
    done.append("fee v1")
    return items * 1000  # the bug: cents counted as euros


@fluxo.step(name="ship.fee")
def fee_v2(items: int) -> int:
    done.append("fee v2")
    return items * 10


@fluxo.step(name="ship.email")
def email(order_id: str, fee: int) -> str:
    done.append("email")
    return f"{order_id}: shipping {fee} cents"


@fluxo.workflow(name="ship.order")
def order_v1(order_id: str) -> str:
    charge(order_id)
    items = reserve(order_id)
    return email(order_id, fee_v1(items))


@fluxo.workflow(name="ship.order")
def order_v2(order_id: str) -> str:
    charge(order_id)
    items = reserve(order_id)
    return email(order_id, fee_v2(items))


store = fluxo.open_store("memory://")  # or "sqlite:///shop.db", "postgresql://..."
with fluxo.Engine(store, workflows=[order_v1]) as v1:
    print(v1.run(order_v1.options(id="o-1"), "o-1"))  # prints: o-1: shipping 3000 cents

with fluxo.Engine(store, workflows=[order_v2]) as v2:  # the fix is deployed
    for position, event in enumerate(v2.history("o-1")):
        print(position, event.kind, event.name)
    # prints: 0 workflow_started ship.order
    # prints: 1 step_completed ship.charge
    # prints: 2 step_completed ship.reserve
    # prints: 3 step_completed ship.fee
    # prints: 4 step_completed ship.email
    # prints: 5 workflow_completed
    done.clear()
    handle = v2.fork("o-1", from_position=3, id="o-1-fixed")  # keeps positions 0 to 2
    v2.worker().process_one()
    print(handle.result())  # prints: o-1: shipping 30 cents
    print(done)  # prints: ['fee v2', 'email']
    print(v2.get_run("o-1-fixed").headers["fluxo-forked-from"])  # prints: o-1
store.close()
