"""Fluxo's integrations: ``fluxo.contrib.django`` and ``fluxo.contrib.flask`` for web frameworks, ``fluxo.contrib.otel`` for OpenTelemetry traces."""
