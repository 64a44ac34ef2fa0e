"""Benchmarks: one "create post" call served three ways, and the pipeline's own cost.

``make bench`` (``python -m bench``: run.py) verifies and measures the three servers
(floor_app, bastion_app, fastapi_app, loaded by wrk with post.lua), then the in-process
figures (inprocess.py); ``make bench-profile`` (hotspots.py) profiles the bastion server.
docs/benchmarks.md has the numbers.
"""
