"""Anomaly scoring: pure numerics on numpy arrays (torch only in ``transformer.py``)."""

__all__: list[str] = []
