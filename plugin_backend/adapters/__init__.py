"""Adapters: implementations of the ports in ``plugin_backend.ports`` (series sources, ...)."""

__all__: list[str] = []
