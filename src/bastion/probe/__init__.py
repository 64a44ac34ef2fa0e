"""``bastion probe URL``: attack a running app's actions from the outside, as CI would.

The probe is black-box: it knows nothing of the app's code, only the protocol
(docs/security-model.md). It

1. crawls the app's pages from ``URL`` — ``GET`` only, same origin only, bounded in
   pages, depth and time — and collects the bastion forms on them (``data-bastion``,
   or an action under the prefix the pages show: ``{prefix}/bastion.js``);
2. for each form's action runs a fixed set of cases, each with the refusal it expects:
   the CSRF matrix (no token, a forged token, another session's token, a foreign
   ``Origin``, ``Origin: null``, ``Sec-Fetch-Site: cross-site``, and one valid call
   as the control), the hostile-input corpus (malformed JSON, deep nesting, NaN,
   ``__proto__`` keys, NUL characters, invalid UTF-8, 100,000 characters in every
   text field, a wrong content type, bodies over 1 MiB, ``GET``, CR/LF and another
   host in ``_next``), and leak checks over every reply (tracebacks, file paths,
   exception names, ``debug`` details, cookie flags, ``no-store`` and ``nosniff``);
3. prints one line per case — PASS, FAIL or SKIP — and a summary.

It does all that as each identity (anonymous, and each ``Identity`` signed in through
the app's log-in page or by cookies and headers), then sends each identity's forms in the
others' sessions (the cross-identity cases). A forged call passes only on a refusal about
the origin or token (docs/probe.md, "The oracle"); the control is a valid call the probe
can show harmless (a required field left empty: 422), and no case runs an action with a
valid token unless ``run_actions``.

It sends requests one at a time, at most ``MAX_REQUESTS_PER_FORM`` per form and
``max_requests`` in all, and refuses any host but loopback unless it is named in
``allow_hosts``. Point it at a test instance, not production.

The package: ``crawl`` (the probe itself), ``login`` (signing in), ``pages`` (links and
forms, read with lxml), ``cases`` (what is tried on each form, and the leak checks),
``incidents`` (the payloads of the model's incidents), ``schema`` (the actions a
``bastion schema`` document lists), ``http`` (requests within the
budget), ``target`` (where it may go), ``model`` (what it finds and reports, the SARIF
rules) and ``formats`` (the exit status).
"""

from __future__ import annotations

from .crawl import probe
from .formats import FailOn, exit_status
from .model import (
    ANONYMOUS,
    CASE_BUDGET,
    MAX_DEPTH,
    MAX_REQUESTS,
    MAX_REQUESTS_PER_FORM,
    RULES,
    Form,
    FormField,
    Identity,
    ProbeError,
    Report,
    Result,
    Seen,
    rule_for,
)
from .pages import extract
from .schema import SchemaAction, actions_from_schema
from .target import check_target, is_loopback, origin_of, same_origin

__all__ = [
    "ANONYMOUS",
    "CASE_BUDGET",
    "MAX_DEPTH",
    "MAX_REQUESTS",
    "MAX_REQUESTS_PER_FORM",
    "RULES",
    "FailOn",
    "Form",
    "FormField",
    "Identity",
    "ProbeError",
    "Report",
    "Result",
    "SchemaAction",
    "Seen",
    "actions_from_schema",
    "check_target",
    "exit_status",
    "extract",
    "is_loopback",
    "origin_of",
    "probe",
    "rule_for",
    "same_origin",
]
