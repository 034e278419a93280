"""Named queues: limits every worker respects, priorities, partitions and delayed starts.

``payments`` lets 2 runs in at once, ``emails`` 3 a minute, ``orders`` one run per
customer at a time. A clock the example moves by hand shows the rate and the
delayed start without waiting.

Run it with ``python examples/queues.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import fluxo

payments = fluxo.Queue("payments", concurrency=2)
emails = fluxo.Queue("emails", rate=3, per=timedelta(minutes=1))
orders = fluxo.Queue("orders", partition_concurrency=1)  # one run per customer at a time

done: list[str] = []


@fluxo.step
def record(what: str) -> str:
    done.append(what)
    return what


@fluxo.workflow(queue=payments)
def charge(order_id: str) -> str:
    record(f"charge {order_id}")
    fluxo.wait_for_signal("settled")  # a run keeps its place in the queue while it waits
    return order_id


@fluxo.workflow(queue=emails)
def send_email(to: str) -> str:
    return record(f"email {to}")


@fluxo.workflow(queue=orders)
def fulfil(order_id: str) -> str:
    record(f"fulfil {order_id}")
    fluxo.wait_for_signal("shipped")
    return order_id


now = [datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()]
engine = fluxo.Engine(
    "memory://",
    workflows=[charge, send_email, fulfil],
    queues=[payments, emails, orders],
    clock=lambda: now[0],
)
worker = engine.worker()  # serves payments, emails, orders and "default"

# Concurrency: 2 payments in flight at once; a higher priority goes first.
for order_id, priority in (("o-1", 0), ("o-2", 0), ("o-3", 0), ("vip", 10)):
    engine.start(charge.options(id=order_id, priority=priority), order_id)
worker.process_one()
print(sorted(done))  # prints: ['charge o-1', 'charge vip']
engine.signal("vip", "settled", None)  # vip finishes: its place goes to o-2
worker.process_one()
print(done[-1])  # prints: charge o-2
print(engine.get_run("o-3").status.value)  # prints: pending

# Rate: 3 e-mails a minute.
done.clear()
for to in ("ann", "bob", "cy", "dee"):
    engine.start(send_email.options(id=f"mail-{to}"), to)
worker.process_one()
print(done)  # prints: ['email ann', 'email bob', 'email cy']
now[0] += 60
worker.process_one()
print(done[-1])  # prints: email dee

# Partitions: one order per customer at a time; other customers go past.
done.clear()
for order_id, customer in (("a-1", "alice"), ("a-2", "alice"), ("b-1", "bob")):
    engine.start(fulfil.options(id=order_id, partition=customer), order_id)
worker.process_one()
print(done)  # prints: ['fulfil a-1', 'fulfil b-1']
engine.signal("a-1", "shipped", None)
worker.process_one()
print(done[-1])  # prints: fulfil a-2

# A delayed start: admitted at start_at, not before.
done.clear()
engine.start(send_email.options(id="later", start_at=now[0] + 3600), "later")
now[0] += 60  # the rate window is free again, but it is not time yet
worker.process_one()
print(done)  # prints: []
now[0] += 3600
worker.process_one()
print(done)  # prints: ['email later']
engine.close()
