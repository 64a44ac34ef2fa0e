"""``bastion`` on the command line: ``keygen``, ``audit``, ``schema``, ``client`` and
``probe``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion.actions.audit import ActionReport, inventory
from bastion.app import AUDITING, Bastion
from bastion.crypto.keys import generate_secret_key
from bastion.errors import ConfigurationError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bastion", description="Server actions, secure by default."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("keygen", help="print a new random secret key (for BASTION_SECRET_KEY)")
    audit = commands.add_parser(
        "audit", help="list every action of an app and exit 1 on any violation"
    )
    audit.add_argument("target", help="MODULE:ATTR naming the app's Bastion, e.g. app:bastion")
    audit.add_argument("--json", action="store_true", help="print JSON for machines")
    schema = commands.add_parser(
        "schema", help="print every action of an app as an OpenAPI 3.1 document (JSON)"
    )
    schema.add_argument("target", help="MODULE:ATTR naming the app's Bastion, e.g. app:bastion")
    schema.add_argument("--out", metavar="FILE", help="write it to FILE instead of stdout")
    schema.add_argument("--title", default="Server actions", help="the document's info.title")
    schema.add_argument("--version", default="1", help="the document's info.version")
    client = commands.add_parser(
        "client", help="write a typed client for an app's actions (from its schema)"
    )
    client.add_argument(
        "--ts", required=True, metavar="OUTDIR", help="write a TypeScript client into OUTDIR"
    )
    client.add_argument("target", help="MODULE:ATTR naming the app's Bastion, e.g. app:bastion")
    probe = commands.add_parser(
        "probe",
        help="attack a running app's forms (CSRF, hostile input, leaks); exit 1 on any failure",
    )
    probe.add_argument("url", help="where to start crawling, e.g. http://127.0.0.1:8000")
    probe.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="probe this non-loopback host too (repeatable)",
    )
    probe.add_argument("--json", action="store_true", help="print JSON for machines")
    probe.add_argument("--max-pages", type=int, default=20, metavar="N", help="pages to crawl")
    probe.add_argument(
        "--timeout", type=float, default=120.0, metavar="S", help="seconds for the whole probe"
    )
    args = parser.parse_args(argv)
    if args.command == "keygen":
        sys.stdout.write(generate_secret_key() + "\n")
        return 0
    if args.command == "probe":
        if args.max_pages < 1 or not args.timeout > 0:
            parser.error("--max-pages and --timeout must be positive")
        return _probe(args.url, args.allow_host, args.max_pages, args.timeout, as_json=args.json)
    if args.command == "schema":
        return _schema(args.target, args.out, args.title, args.version)
    if args.command == "client":
        return _client(args.target, Path(args.ts))
    return _audit(args.target, as_json=args.json)


def _probe(
    url: str, allow_hosts: list[str], max_pages: int, timeout: float, *, as_json: bool
) -> int:
    from bastion.probe import ProbeError, probe  # httpx2 is loaded only for this command

    try:
        report = probe(url, allow_hosts=allow_hosts, max_pages=max_pages, timeout=timeout)
    except ProbeError as exc:
        sys.stderr.write(f"bastion probe: {exc}\n")
        return 2
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(report.text())
    return 0 if report.ok else 1


def _load(
    command: str, target: str, refused: list[tuple[str, str]] | None = None
) -> Bastion[Any] | int:
    """The ``Bastion`` that ``MODULE:ATTR`` names, imported from the current directory,
    or the exit status after saying why not. With ``refused``, registrations the app
    refuses are collected there (``bastion audit`` reports them all); without, the first
    stops the import, as it stops the app."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        sys.stderr.write(f"bastion {command}: {target!r} is not MODULE:ATTR\n")
        return 2
    sys.path.insert(0, os.getcwd())
    token = AUDITING.set(refused)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not f"{module_name}.".startswith(f"{exc.name}."):
            raise  # the app's own import of something else failed: show where
        sys.stderr.write(f"bastion {command}: no module named {exc.name!r}\n")
        return 2
    except ConfigurationError as exc:
        sys.stderr.write(f"bastion {command}: {module_name} refuses to start: {exc}\n")
        return 1
    finally:
        AUDITING.reset(token)
    bastion = getattr(module, attribute, None)
    if not isinstance(bastion, Bastion):
        sys.stderr.write(f"bastion {command}: {target} is not a Bastion\n")
        return 2
    return bastion


def _audit(target: str, *, as_json: bool) -> int:
    refused: list[tuple[str, str]] = []
    bastion = _load("audit", target, refused)
    if isinstance(bastion, int):
        return bastion
    reports = inventory(bastion, refused)
    if as_json:
        sys.stdout.write(json.dumps([r.as_dict() for r in reports], indent=2, default=str) + "\n")
    else:
        sys.stdout.write(_text(reports))
    return 1 if any(r.violations for r in reports) else 0


def _schema(target: str, out: str | None, title: str, version: str) -> int:
    bastion = _load("schema", target)
    if isinstance(bastion, int):
        return bastion
    text = json.dumps(bastion.schema(title=title, version=version), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        Path(out).write_text(text, encoding="utf-8")
    return 0


def _client(target: str, out_dir: Path) -> int:
    try:
        from bastion import tsclient  # the generator is loaded only for this command
    except ImportError as exc:
        if exc.name not in ("bastion", "bastion.tsclient"):
            raise
        sys.stderr.write("bastion client: this bastion has no TypeScript client generator\n")
        return 2
    bastion = _load("client", target)
    if isinstance(bastion, int):
        return bastion
    for path in tsclient.write_client(bastion.schema(), out_dir):
        sys.stdout.write(f"{path}\n")
    return 0


def _text(reports: list[ActionReport]) -> str:
    lines: list[str] = []
    for r in reports:
        lines.append(f"{r.name}  [{r.id or 'not registered'}]")
        if r.id is not None:
            lines.append(f"  policy     {r.policy}")
            lines.append(f"  rate       {r.rate or 'none'}")
            lines.append(f"  accepts    {', '.join(r.content_types)}")
            lines.append(f"  limits     body {r.max_body_bytes} B, timeout {r.timeout:g} s")
            if r.max_file_bytes is not None:
                lines.append(f"             files {r.max_file_bytes} B each")
            lines.append(f"  bound      {', '.join(r.bound_arguments) or 'none'}")
            if r.idempotent:
                lines.append("  once       per idempotency key (idempotent=True)")
            if r.tokens is not None:
                lines.append(f"  tokens     API tokens with a scope of: {', '.join(r.tokens)}")
            if r.step_up is not None:
                lines.append(f"  step-up    a log-in at most {r.step_up:g} s old")
            for f in r.fields:
                shown = {k: v for k, v in f.bounds.items() if k != "unbounded"}
                bounds = ", ".join(f"{k}={v}" for k, v in shown.items()) or "no bounds"
                lines.append(f"  field      {f.path}: {f.type} ({bounds})")
        for warning in r.warnings:
            lines.append(f"  WARNING    {warning}")
        for violation in r.violations:
            lines.append(f"  VIOLATION  {violation}")
        lines.append("")
    count = sum(len(r.violations) for r in reports)
    warned = sum(len(r.warnings) for r in reports)
    lines.append(f"{len(reports)} actions, {count} violations, {warned} warnings")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
