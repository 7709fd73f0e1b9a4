"""The KV block-map dashboard: live in ``kvlab.serve`` (``/dashboard``) and as a replay of a
recorded run (``python -m kvlab.view RESULTS_DIR``). See docs/dashboard.md.

Modules: :mod:`.snapshot` (the compact JSON format), :mod:`.live` (the server's throttled
publisher), :mod:`.recorder` (``record.blocks=true`` in ``kvlab.run``), :mod:`.replay` (reading a
recording), :mod:`.routes` (the HTTP routes and the page), :mod:`.export` (GIF / MP4).
"""
