"""Benchmarks: one "create post" call served three ways, and the pipeline's own cost.

``make bench`` (``python -m bench``: run.py) verifies and measures the three servers
(floor_app, bastion_app, fastapi_app, loaded by wrk with post.lua), the price of a
forged-token call on the bastion server (refused.lua), the flood check, then the
in-process figures and each stage's cost (inprocess.py); ``make bench-profile``
(hotspots.py) profiles the bastion server. docs/benchmarks.md has the numbers.
"""
