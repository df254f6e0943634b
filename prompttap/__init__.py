"""prompttap: see exactly what your LLM apps send to the model.

One import package, four parts (each a top-level folder of the repository):

- ``prompttap.collector`` (``collector/``): the recording proxy, the spool, the recorder,
  the encoder process and the sinks.
- ``prompttap.inspector`` (``inspector/``): the web UI and JSON API over the store, and export.
- ``prompttap.schemas`` (``schemas/``): the one definition of a capture, its DDL, its span
  mapping and the pure rules both sides share (templates, credentials).
- ``prompttap`` itself (``prompttap/``): the composition root, the command line and ``serve``;
  the only place that imports both the collector and the inspector.
"""
