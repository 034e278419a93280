from django.db import models


class Order(models.Model):
    """An order: charged by its workflow, then paid when the payment webhook comes."""

    cents = models.PositiveIntegerField()
    status = models.CharField(max_length=10, default="new")  # new, charged, paid
    charge_id = models.CharField(max_length=50, blank=True)
    times_paid = models.PositiveIntegerField(default=0)  # stays 1: each order is paid once
