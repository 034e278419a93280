"""``manage.py fluxo``."""
