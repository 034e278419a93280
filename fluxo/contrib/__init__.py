"""Fluxo's integrations with web frameworks: ``fluxo.contrib.django`` and ``fluxo.contrib.flask``."""
