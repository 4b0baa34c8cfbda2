"""Training the transformer forecaster (``plugin-backend train``): the synthetic
corpus it learns from (``corpus``) and the training loop (``train``), which writes
weights through the artefact adapter. Tooling at the edge: scoring never imports it."""

__all__: list[str] = []
