"""The demo board's tests: in process and under uvicorn, on SQLite and PostgreSQL
(conftest.py), under attack (security/) and in Chromium (e2e/)."""
