"""Serve interactive segmentation from a persistent worker process over HTTP (``synthfm serve``).

Slicer never enables PythonQt's thread support, so model work cannot run on Slicer's GUI thread nor in a
Python thread there: it runs in this worker (Slicer's own Python started by the effect on localhost, or
``synthfm serve`` on a GPU machine).  The worker holds one model and the per-slice embedding cache, encodes
slices in the background, answers prompts and runs propagation as cancellable jobs.

Modules: ``protocol`` (wire format, numpy only: importable without torch or a web framework), ``gate``
(one model user at a time, prompts first), ``jobs`` (background jobs with progress and cancel), ``worker``
(the model, volumes and jobs; no web code), ``app`` (the FastAPI application), ``cli`` (``synthfm serve``),
``openapi`` (writes docs/serve_openapi.json).  See docs/serve.md.
"""
