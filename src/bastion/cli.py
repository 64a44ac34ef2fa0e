"""``bastion`` on the command line: ``keygen``, ``audit``, ``schema``, ``client`` and
``probe``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion.actions.audit import (
    ActionReport,
    Finding,
    Waiver,
    WaiverError,
    inventory,
    waive,
    waivers,
)
from bastion.app import AUDITING, AuditRun, Bastion
from bastion.config import Environment
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
    _report_options(
        audit, "error", "exit 1 on an unwaived finding of this level or worse (default: error)"
    )
    audit.add_argument(
        "--config",
        metavar="FILE",
        help="the pyproject.toml with [tool.bastion.audit] (default: the nearest one up)",
    )
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
    _report_options(
        probe, "warning", "exit 1 on a failed case of this level or worse (default: any failure)"
    )
    probe.add_argument("--max-pages", type=int, default=20, metavar="N", help="pages to crawl")
    probe.add_argument(
        "--max-requests",
        type=int,
        default=5000,
        metavar="N",
        help="requests in all, every identity together",
    )
    probe.add_argument(
        "--timeout", type=float, default=120.0, metavar="S", help="seconds for the whole probe"
    )
    probe.add_argument(
        "--case-budget",
        type=float,
        default=3.0,
        metavar="S",
        help="seconds an incident payload may cost the server, even refused",
    )
    probe.add_argument(
        "--run-actions",
        action="store_true",
        help="also submit each form validly once, which runs its action (test instances only)",
    )
    probe.add_argument(
        "--schema",
        "--expect",
        dest="schema",
        metavar="FILE",
        help="a `bastion schema` document: probe its actions no page shows too, as a script"
        " calls them, and report which were reached",
    )
    probe.add_argument(
        "--start",
        action="append",
        default=[],
        metavar="PATH",
        help="crawl from this page too, e.g. /reauth (repeatable)",
    )
    probe.add_argument(
        "--max-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds in all to wait out Retry-After and send a 429'd case again (default 0)",
    )
    who = probe.add_argument_group(
        "identities",
        "Anonymous always, unless --no-anonymous. Each --as NAME starts an identity; the "
        "--user, --password-env, --cookie and --header after it are its own (before any "
        "--as, they make one named 'user').",
    )
    who.add_argument("--login", metavar="URL", help="the page with the app's log-in form")
    who.add_argument("--no-anonymous", action="store_true", help="probe signed in only")
    who.add_argument("--as", dest="identities", action=_NewIdentity, metavar="NAME")
    who.add_argument("--user", action=_IdentityField, metavar="USER", help="user name or email")
    who.add_argument(
        "--password-env", action=_IdentityField, metavar="VAR", help="read the password from $VAR"
    )
    who.add_argument(
        "--cookie", action=_IdentityField, metavar="NAME=VALUE", help="a cookie (repeatable)"
    )
    who.add_argument(
        "--header", action=_IdentityField, metavar="'NAME: VALUE'", help="a header (repeatable)"
    )
    args = parser.parse_args(argv)
    if args.command == "keygen":
        sys.stdout.write(generate_secret_key() + "\n")
        return 0
    if args.command == "probe":
        if args.max_pages < 1 or not args.timeout > 0:
            parser.error("--max-pages and --timeout must be positive")
        if args.max_requests < 1 or not args.case_budget > 0:
            parser.error("--max-requests and --case-budget must be positive")
        if not args.max_wait >= 0:
            parser.error("--max-wait must be zero or more")
        return _probe(args, parser)
    if args.command == "schema":
        return _schema(args.target, args.out, args.title, args.version)
    if args.command == "client":
        return _client(args.target, Path(args.ts))
    return _audit(args.target, args.format, args.output, args.fail_on, args.config)


class _NewIdentity(argparse.Action):
    """``--as NAME``: the identity the options after it describe."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, _: Any = None
    ) -> None:
        people = getattr(ns, "identities", None) or []
        if any(p["name"] == value for p in people) or value == "anonymous":
            parser.error(f"--as {value}: the name is taken")
        ns.identities = [*people, {"name": value, "cookie": [], "header": []}]


class _IdentityField(argparse.Action):
    """``--user``, ``--password-env``, ``--cookie``, ``--header``: of the last ``--as``."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, _: Any = None
    ) -> None:
        people = getattr(ns, "identities", None) or []
        if not people:
            people = [{"name": "user", "cookie": [], "header": []}]
            ns.identities = people
        person = people[-1]
        key = self.dest.replace("_", "-")
        if key in ("cookie", "header"):
            person[key].append(value)
        elif key in person:
            parser.error(f"--{key} given twice for {person['name']}")
        else:
            person[key] = value


def _identities(people: list[dict[str, Any]], parser: argparse.ArgumentParser) -> list[Any]:
    from bastion.probe import Identity

    found = []
    for p in people:
        name = p["name"]
        password = None
        if "password-env" in p:
            password = os.environ.get(p["password-env"])
            if not password:
                parser.error(f"{name}: ${p['password-env']} is empty or unset")
        if ("user" in p) != (password is not None):
            parser.error(f"{name}: --user and --password-env go together")
        cookies = []
        for raw in p["cookie"]:
            key, sep, value = raw.partition("=")
            if not sep or not key.strip():
                parser.error(f"{name}: --cookie {raw!r} is not NAME=VALUE")
            cookies.append((key.strip(), value.strip()))
        headers = []
        for raw in p["header"]:
            key, sep, value = raw.partition(":")
            if not sep or not key.strip():
                parser.error(f"{name}: --header {raw!r} is not 'Name: value'")
            headers.append((key.strip(), value.strip()))
        found.append(Identity(name, p.get("user"), password, tuple(cookies), tuple(headers)))
    return found


def _probe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # httpx2 and lxml: for this command only
    from bastion.probe import ProbeError, actions_from_schema, exit_status, probe

    identities = _identities(args.identities or [], parser)
    try:
        schema = []
        if args.schema:
            try:
                document = json.loads(Path(args.schema).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ProbeError(f"--schema {args.schema}: {exc}") from None
            schema = actions_from_schema(document)
        report = probe(
            args.url,
            allow_hosts=args.allow_host,
            max_pages=args.max_pages,
            timeout=args.timeout,
            identities=identities,
            anonymous=not args.no_anonymous,
            login=args.login,
            max_requests=args.max_requests,
            run_actions=args.run_actions,
            case_budget=args.case_budget,
            schema=schema,
            starts=args.start,
            max_wait=args.max_wait,
        )
    except ProbeError as exc:
        sys.stderr.write(f"bastion probe: {exc}\n")
        return 2
    if args.format == "json":
        text = json.dumps(report.as_dict(), indent=2) + "\n"
    elif args.format == "sarif":
        text = json.dumps(_probe_sarif(report), indent=2) + "\n"
    else:
        text = report.text()
    _write(text, args.output)
    return exit_status(report, args.fail_on)


def _report_options(command: argparse.ArgumentParser, fail_on: str, fail_help: str) -> None:
    """What ``audit`` and ``probe`` share for CI: the report's format, where it goes, and
    the level that makes the exit status 1."""
    command.add_argument(
        "--format",
        choices=("text", "json", "sarif"),
        default="text",
        help="the report: text, JSON, or SARIF 2.1.0 for code scanning",
    )
    command.add_argument(
        "--json", action="store_const", const="json", dest="format", help="--format json"
    )
    command.add_argument("--output", metavar="FILE", help="write the report to FILE, not stdout")
    command.add_argument(
        "--fail-on", choices=("error", "warning", "never"), default=fail_on, help=fail_help
    )


def _write(text: str, path: str | None) -> None:
    """A report or document to ``path``, or to stdout without one."""
    if path is None:
        sys.stdout.write(text)
    else:
        Path(path).write_text(text, encoding="utf-8")


def _probe_sarif(report: Any) -> dict[str, Any]:
    """Each case's rule (``bastion.probe.RULES``), each failed case a result at its URL."""
    from bastion import sarif
    from bastion.probe import RULES, rule_for

    # No help URI: the rules' table is docs/probe.md in the package's own source, which
    # has no published address to point at.
    rules = [sarif.Rule(rule_id, name, short, level) for rule_id, name, level, short, _ in RULES]
    results = [
        sarif.Result(
            rule_for(r.case)[0],
            f"{r.case}: expected {r.expected}, got {r.got} (as {r.identity})",
            uri=r.url or report.url,
            logical=f"{r.identity}/{r.target}",
            properties={"identity": r.identity, "case": r.case, "target": r.target},
        )
        for r in report.results
        if r.status == "FAIL"
    ]
    return sarif.log("bastion probe", _version(), rules, results)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bastion")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout, uninstalled
        return "0"


def _load(command: str, target: str, auditing: AuditRun | None = None) -> Bastion[Any] | int:
    """The ``Bastion`` that ``MODULE:ATTR`` names, imported from the current directory,
    or the exit status after saying why not. With ``auditing``, registrations the app
    refuses are collected there (``bastion audit`` reports them all), and its stand-ins
    fill what the environment leaves unset; without, the first refusal stops the import,
    as it stops the app."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        sys.stderr.write(f"bastion {command}: {target!r} is not MODULE:ATTR\n")
        return 2
    sys.path.insert(0, os.getcwd())
    token = AUDITING.set(auditing)
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


AUDIT_ORIGIN = "http://audit.invalid"
"""The origin an audit-only import stands in (``.invalid`` resolves nowhere, RFC 6761)."""

_STOOD_IN = {
    "secret_key": ("secret key", "BASTION_SECRET_KEY"),
    "allowed_origins": (f"origins ({AUDIT_ORIGIN})", "BASTION_ALLOWED_ORIGINS"),
}


def _audit(target: str, form: str, output: str | None, fail_on: str, config: str | None) -> int:
    found = _audit_config(Path(config) if config is not None else None)
    if isinstance(found, int):
        return found
    config_path, waivers = found
    # Imported as a test run imports it: what neither the app nor the environment sets
    # of what Bastion() requires (the secret key, the origins) gets a throwaway stand-in,
    # made here. The app's own values, where it has them, are the ones audited.
    auditing = AuditRun(
        stand_ins=Environment(secret_key=generate_secret_key(), allowed_origins=(AUDIT_ORIGIN,))
    )
    bastion = _load("audit", target, auditing)
    if isinstance(bastion, int):
        return bastion
    reports = inventory(bastion, auditing.refused)
    unused = waive(reports, waivers)
    header = _audit_only(auditing.stood_in)
    if header is not None:
        sys.stderr.write(f"bastion audit: {header}\n")
    if form == "json":
        text = json.dumps(
            {
                "audit_only": [_STOOD_IN[name][1] for name in auditing.stood_in],
                "config": str(config_path) if config_path is not None else None,
                "actions": [r.as_dict() for r in reports],
                "unused_waivers": [f.as_dict() for f in unused],
                "summary": _summary(reports, unused),
            },
            indent=2,
            default=str,
        )
    elif form == "sarif":
        text = json.dumps(_audit_sarif(bastion, reports, unused, config_path, header), indent=2)
    else:
        text = _text(reports, unused, header).rstrip("\n")
    _write(text + "\n", output)
    findings = [f for r in reports for f in r.findings] + unused
    failing = {"error": {"error"}, "warning": {"error", "warning"}, "never": set()}[fail_on]
    return 1 if any(f.waived is None and f.level in failing for f in findings) else 0


def _audit_config(explicit: Path | None) -> tuple[Path | None, list[Waiver]] | int:
    """The waivers of ``[tool.bastion.audit]`` in ``explicit``, else in the nearest
    ``pyproject.toml`` from the current directory up; exit status 2 for one that cannot
    be read, naming it and the entry."""
    import tomllib

    path = explicit
    if path is None:
        here = Path.cwd().resolve()
        path = next(
            (
                d / "pyproject.toml"
                for d in (here, *here.parents)
                if (d / "pyproject.toml").is_file()
            ),
            None,
        )
        if path is None:
            return None, []
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        sys.stderr.write(f"bastion audit: cannot read {path}: {exc}\n")
        return 2
    table = document.get("tool", {}).get("bastion", {}).get("audit")
    if table is None:
        return path, []
    try:
        if not isinstance(table, dict):
            raise WaiverError(f"{path} [tool.bastion.audit]: must be a table")
        return path, waivers(table, f"{path} [tool.bastion.audit]")
    except WaiverError as exc:
        sys.stderr.write(f"bastion audit: {exc}\n")
        return 2


def _audit_only(stood_in: list[str]) -> str | None:
    """The header line that says which values were throwaway stand-ins, if any."""
    if not stood_in:
        return None
    what = [_STOOD_IN[name][0] for name in stood_in]
    listed = what[0] if len(what) == 1 else f"{', '.join(what[:-1])} and {what[-1]}"
    unset = " and ".join(_STOOD_IN[name][1] for name in stood_in)
    verb = "is" if len(stood_in) == 1 else "are"
    return f"audit-only: throwaway {listed}, as {unset} {verb} unset"


def _summary(reports: list[ActionReport], unused: list[Finding]) -> dict[str, int]:
    findings = [f for r in reports for f in r.findings] + unused
    return {
        "actions": len(reports),
        "violations": sum(1 for f in findings if f.level == "error" and f.waived is None),
        "warnings": sum(1 for f in findings if f.level != "error" and f.waived is None),
        "waived": sum(1 for f in findings if f.waived is not None),
    }


def _audit_sarif(
    bastion: Bastion[Any],
    reports: list[ActionReport],
    unused: list[Finding],
    config_path: Path | None,
    header: str | None,
) -> dict[str, Any]:
    from bastion import sarif
    from bastion.actions.audit import RULES

    here = Path.cwd().resolve()

    def relative(path: Path) -> str:
        with contextlib.suppress(ValueError):
            return path.resolve().relative_to(here).as_posix()
        return path.resolve().as_uri()

    sources: dict[str, tuple[str, int | None]] = {}
    for spec in bastion.registry:
        fn = inspect.unwrap(spec.fn)
        with contextlib.suppress(TypeError, OSError):
            file = inspect.getsourcefile(fn)
            if file is not None:
                sources[spec.name] = (relative(Path(file)), inspect.getsourcelines(fn)[1])
    results = []
    for r in reports:
        uri, line = sources.get(r.name, (None, None))
        for f in r.findings:
            results.append(
                sarif.Result(f.rule, f"{r.name}: {f.message}", f.level, uri, line, r.name, f.waived)
            )
    for f in unused:
        uri = relative(config_path) if config_path is not None else None
        results.append(sarif.Result(f.rule, f.message, f.level, uri, None, f.action))
    document = sarif.log("bastion audit", _version(), RULES, results)
    if header is not None:
        document["runs"][0]["properties"] = {"auditOnly": header}
    return document


def _schema(target: str, out: str | None, title: str, version: str) -> int:
    bastion = _load("schema", target)
    if isinstance(bastion, int):
        return bastion
    _write(json.dumps(bastion.schema(title=title, version=version), indent=2) + "\n", out)
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


def _text(
    reports: list[ActionReport], unused: list[Finding] | None = None, header: str | None = None
) -> str:
    lines: list[str] = [header] if header is not None else []
    for r in reports:
        lines.append(f"{r.name}  [{r.id or 'not registered'}]")
        if r.id is not None:
            lines.append(f"  policy     {r.policy}")
            lines.append(f"  rate       {r.rate or 'none'}")
            lines.append(f"  accepts    {', '.join(r.content_types)}")
            lines.append(f"  limits     body {r.max_body_bytes} B, timeout {r.timeout:g} s")
            if r.max_file_bytes is not None:
                lines.append(f"             files {r.max_files} at most, {r.max_file_bytes} B each")
            lines.append(f"  bound      {', '.join(r.bound_arguments) or 'none'}")
            if r.check is not None:
                lines.append(f"  check      {r.check}")
            if r.fragment is not None:
                lines.append(f"  fragment   {r.fragment}")
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
        for level, label in (("warning", "WARNING  "), ("error", "VIOLATION")):
            for finding in r.findings:
                if finding.level == level and finding.waived is None:
                    lines.append(f"  {label}  {finding.text()}")
        for finding in r.findings:
            if finding.waived is not None:
                lines.append(f"  WAIVED     {finding.text()} (waived: {finding.waived})")
        lines.append("")
    for finding in unused or ():
        lines.append(f"WARNING  {finding.text()}")
    summary = _summary(reports, list(unused or ()))
    line = f"{summary['actions']} actions, {summary['violations']} violations, "
    line += f"{summary['warnings']} warnings"
    if summary["waived"]:
        line += f", {summary['waived']} waived"
    lines.append(line)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
