"""The ``fluxo ui`` web dashboard."""
