"""The Grafana JSON-datasource wire format (plugin ``simpod-json-datasource``).

Pure: parses request bodies into value objects and renders responses.
Epoch milliseconds and Grafana's camelCase live here and nowhere else.
"""

__all__: list[str] = []
