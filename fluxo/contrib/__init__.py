"""Fluxo's integrations: web frameworks (``fluxo.contrib.django``, ``fluxo.contrib.flask``) and metrics (``fluxo.contrib.prometheus``)."""
