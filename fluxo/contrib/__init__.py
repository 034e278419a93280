"""Fluxo in the web frameworks you already run: ``fluxo.contrib.django``, ``fluxo.contrib.flask``.

Each integration is imported only by an application that uses it; ``import fluxo``
imports no framework.
"""
