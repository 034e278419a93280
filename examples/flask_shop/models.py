"""The shop's data: orders, on Flask-SQLAlchemy."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """The base of the shop's models."""


db = SQLAlchemy(model_class=Base)


class Order(db.Model):
    """An order, pending until its payment arrives."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    cents: Mapped[int]
    status: Mapped[str] = mapped_column(default="pending")  # then "paid" or "expired"
    times_paid: Mapped[int] = mapped_column(default=0)  # how often it was marked paid: 0 or 1
