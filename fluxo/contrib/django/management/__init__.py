"""Django management commands of Fluxo."""
