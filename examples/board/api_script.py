"""Lists and publishes the board's posts with an API token: a script, no browser.

Make a token on your profile (/me, "API tokens"); the page shows the two action URLs
this script needs. Then::

    export BOARD_TOKEN=bst_…
    python examples/board/api_script.py --list-url URL list
    python examples/board/api_script.py --create-url URL create "Title" "Body text"

It sends ``Authorization: Bearer`` and JSON, and no cookie or CSRF token: bastion takes
the token instead. A refusal (a revoked token is ``401 invalid_token``) is printed with
its code, and the script exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx2 as httpx


def call(client: httpx.Client, url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """One action call: the envelope bastion answers (``{"ok": …}``)."""
    response = client.post(
        url,
        json=body,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    reply: dict[str, Any] = response.json()
    return reply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--list-url", help="list_posts's URL, from your profile page")
    parser.add_argument("--create-url", help="create_post's URL, from your profile page")
    parser.add_argument("--token", default=os.environ.get("BOARD_TOKEN"), help="or BOARD_TOKEN")
    parser.add_argument("--cafile", help="a CA certificate to trust (make cluster's)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the 50 newest posts")
    create = commands.add_parser("create", help="publish a post")
    create.add_argument("title")
    create.add_argument("body")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("no token: pass --token or set BOARD_TOKEN")
    url = args.list_url if args.command == "list" else args.create_url
    if not url:
        parser.error(f"{args.command} needs --{args.command}-url")
    body = {} if args.command == "list" else {"title": args.title, "body": args.body}
    with httpx.Client(verify=args.cafile or True, timeout=10.0) as client:
        reply = call(client, url, args.token, body)
    if not reply.get("ok"):
        error = reply.get("error", {})
        sys.stderr.write(f"refused: {error.get('code')}: {error.get('message')}\n")
        return 1
    if args.command == "list":
        for post in reply["data"]["posts"]:
            sys.stdout.write(f"{post['id']:>5}  {post['title']}  ({post['author']})\n")
    else:
        sys.stdout.write(json.dumps(reply["data"]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
