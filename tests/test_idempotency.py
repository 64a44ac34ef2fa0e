"""Exactly-once calls: ``@bastion.action(idempotent=True)``, the ``Idempotency-Key`` header
and a form's ``_idem`` key (stages 13 and 19).

Each test names what a user or an attacker does and asserts what the handler did (how
many times it ran, counted in a list it appends to) and exactly what came back. The
stores are real: memory, SQLite (a file), Redis (``REDIS_URL``); concurrent calls run
on one event loop through the ASGI app, and across two apps sharing one store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2 as httpx
import pytest
import redis
from conftest import SECRET, mounted
from pydantic import BaseModel, ConfigDict

from bastion import ActionError, Bastion, ConfigurationError, idempotency, public
from bastion.sessions import Session, cookie_name
from bastion.stores import MemoryStore, SQLiteStore, Store
from bastion.testing import ActionClient

ORIGIN = "http://127.0.0.1"
AS_SCRIPT = {"Accept": "application/json"}
"""A form posted by a script: the reply is the JSON envelope, not a 303."""
PREFIX = "bastion-idempotency-test:"


class Payment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: int
    note: str = ""


class Receipt(BaseModel):
    number: int
    amount: int


class App:
    """An app whose ``pay`` action counts its runs; ``slow_pay`` takes 0.2 s."""

    def __init__(self, store: Store, runs: list[int] | None = None) -> None:
        self.runs: list[int] = [] if runs is None else runs
        self.bastion = Bastion(
            secret_key=SECRET,
            allowed_origins=[ORIGIN],
            store=store,
            default_rate="100000/minute",
            rate_limit_storage="memory://",
        )
        runs_ = self.runs

        @self.bastion.action(policy=public, idempotent=True)
        def pay(data: Payment) -> Receipt:
            runs_.append(data.amount)
            return Receipt(number=len(runs_), amount=data.amount)

        @self.bastion.action(policy=public, idempotent=True)
        async def slow_pay(data: Payment) -> Receipt:
            runs_.append(data.amount)
            await anyio.sleep(0.2)
            return Receipt(number=len(runs_), amount=data.amount)

        @self.bastion.action(policy=public)
        def plain_pay(data: Payment) -> Receipt:
            runs_.append(data.amount)
            return Receipt(number=len(runs_), amount=data.amount)

        @self.bastion.action(policy=public, idempotent=True)
        def refuse(data: Payment) -> Receipt:
            runs_.append(data.amount)
            raise ActionError("Card declined.", code="declined", status=402)

        @self.bastion.action(policy=public, idempotent=True)
        def crash(data: Payment) -> Receipt:
            runs_.append(data.amount)
            raise RuntimeError("the payment provider is down")

        @self.bastion.action(policy=public, idempotent=True, timeout=0.05)
        async def overrun(data: Payment) -> Receipt:
            runs_.append(data.amount)
            await anyio.sleep(1)
            return Receipt(number=len(runs_), amount=data.amount)

        self.app = mounted(self.bastion)

    def client(self) -> ActionClient:
        return ActionClient(self.app, self.bastion)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Makes a client to one shared store per call (a host of its own)."""
    if request.param == "memory":
        shared = MemoryStore()
        yield lambda: shared
    elif request.param == "sqlite":
        yield lambda: SQLiteStore(tmp_path)
    else:
        from bastion.stores.redis import RedisStore

        url = request.getfixturevalue("redis_url")
        yield lambda: RedisStore(url, prefix=PREFIX)
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=PREFIX + "*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def app(store_factory: Any) -> App:
    return App(store_factory())


def pay(client: ActionClient, key: str | None, amount: int = 10, **kw: Any) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.call(kw.pop("action", "pay"), {"amount": amount, **kw}, headers=headers)


def test_a_retried_script_call_runs_once_and_gets_the_same_reply(app: App) -> None:
    """A script sends "pay 10" and, its connection having dropped, sends it again with the
    same key: the handler ran once; the second reply is the first, byte for byte. A new key
    is a new payment."""
    with app.client() as client:
        first = pay(client, '"order-1"')
        second = pay(client, '"order-1"')
        assert first.json() == {"ok": True, "data": {"number": 1, "amount": 10}}
        assert (second.status_code, second.content) == (200, first.content)
        assert second.headers["content-type"] == "application/json"
        assert app.runs == [10]
        assert pay(client, "order-2").json()["data"] == {"number": 2, "amount": 10}
        assert app.runs == [10, 10]


def test_the_same_key_with_another_body_is_422(app: App) -> None:
    """The attack: replay a key with another amount, hoping for the first reply or a second
    run. Refused 422, nothing runs."""
    with app.client() as client:
        assert pay(client, "k", 10).status_code == 200
        reply = pay(client, "k", 9999)
        assert reply.status_code == 422
        assert reply.json() == {
            "ok": False,
            "error": {
                "code": "idempotency_key_reused",
                "message": "This idempotency key was used for another request.",
            },
        }
        assert app.runs == [10]


def test_another_session_with_the_same_key_gets_its_own_call(app: App, store_factory: Any) -> None:
    """Keys belong to their session: a second visitor (on another host) who sends the
    first one's key runs a payment of their own and never sees the first's receipt."""
    other = App(store_factory(), app.runs)
    with app.client() as alice, other.client() as mallory:
        assert pay(alice, "shared", 10).json()["data"]["amount"] == 10
        theirs = pay(mallory, "shared", 10)
        assert theirs.json()["data"] == {"number": 2, "amount": 10}
        assert app.runs == [10, 10]


def test_without_a_key_or_on_an_action_not_declared_idempotent_every_call_runs(app: App) -> None:
    with app.client() as client:
        pay(client, None)
        pay(client, None)
        pay(client, "k", action="plain_pay")
        pay(client, "k", action="plain_pay")
    assert app.runs == [10, 10, 10, 10]


@pytest.mark.parametrize(
    "value",
    ["", '""', "x" * 256, "tab\there", "é".encode(), "two words"],
    ids=["empty", "empty-quoted", "256-chars", "control", "non-ascii", "space"],
)
def test_a_malformed_key_is_400(value: str | bytes) -> None:
    """A key must be 1 to 255 visible ASCII characters (quoted or not): anything else is
    refused before the handler."""
    made = App(MemoryStore())
    with made.client() as client:
        reply = client.call("pay", {"amount": 1}, headers={"Idempotency-Key": value})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "idempotency_key_invalid"
    assert made.runs == []


def test_two_keys_in_one_call_are_400() -> None:
    """Two headers, or a header and a form key: which one counts is never guessed."""
    made = App(MemoryStore())
    with made.client() as client:
        form_key = client.idempotency_key("pay")
        both = client.submit(
            "pay", {"amount": "1", "_idem": form_key}, headers={"Idempotency-Key": "x"}
        )
        assert both.status_code == 303
        assert client.flash("pay").code == "idempotency_key_invalid"  # type: ignore[union-attr]
        two = client.post(
            client.url("pay"),
            content=b'{"amount": 1}',
            headers=[
                ("content-type", "application/json"),
                ("accept", "application/json"),
                ("idempotency-key", "a"),
                ("idempotency-key", "b"),
            ],
        )
        assert two.json()["error"]["code"] == "idempotency_key_invalid"
    assert made.runs == []


def test_a_double_clicked_form_runs_once_and_lands_on_the_same_page(app: App) -> None:
    """A browser without JavaScript posts the same rendered form twice (a double click):
    one payment; both posts answer 303 to the same page, whose flash says the same."""
    with app.client() as client:
        key = client.idempotency_key("pay")
        fields = {"amount": "25", "_idem": key, "_next": "/done"}
        first = client.submit("pay", fields)
        first_flash = client.flash("pay")
        client.get("/", headers={"accept": "text/html"})  # the page shows it, once
        second = client.submit("pay", fields)
        assert (first.status_code, second.status_code) == (303, 303)
        assert first.headers["location"] == second.headers["location"] == "/done"
        assert client.flash("pay") == first_flash
        assert first_flash is not None
        assert first_flash.data == {"number": 1, "amount": 25}
    assert app.runs == [25]


def test_a_form_key_of_another_session_or_action_is_400(app: App, store_factory: Any) -> None:
    """The attack: lift a key from someone else's page, or from another action's form,
    to replay what it did. Its MAC binds it to its session and action: 400."""
    other = App(store_factory(), app.runs)
    with app.client() as alice, other.client() as mallory:
        lifted = alice.idempotency_key("pay")
        assert alice.submit("pay", {"amount": "5", "_idem": lifted}).status_code == 303
        for client, key in ((mallory, lifted), (alice, alice.idempotency_key("slow_pay"))):
            reply = client.submit("pay", {"amount": "5", "_idem": key}, headers=AS_SCRIPT)
            assert reply.status_code == 400, reply.text
            assert reply.json()["error"]["code"] == "idempotency_key_invalid"
    assert app.runs == [5]


def test_an_expired_or_forged_form_key_is_400() -> None:
    made = App(MemoryStore())
    with made.client() as client:
        key = client.idempotency_key("pay")
        nonce, _, mac = key.split(".")
        forged = f"{nonce}.{int(time.time()) - 100}.{mac}"  # another date under the MAC
        spec = made.bastion.registry.get("pay")
        session = anyio.run(made.bastion.session_manager.load, client.session_id)
        old = str(int(time.time() - idempotency.KEY_TTL - 60))
        real_mac = idempotency._form_mac(  # a real MAC, for a date past the key's lifetime
            made.bastion.keys.current("idempotency"), spec, session, nonce, old
        )
        expired = f"{nonce}.{old}.{idempotency._b64(real_mac)}"
        for bad in (forged, expired, "garbage", key + "x"):
            reply = client.submit("pay", {"amount": "1", "_idem": bad}, headers=AS_SCRIPT)
            assert reply.json()["error"]["code"] == "idempotency_key_invalid", bad
    assert made.runs == []


def _session_headers(made: App, session: Session) -> list[tuple[bytes, bytes]]:
    from bastion import csrf

    name = cookie_name(made.bastion.config.sessions.cookie_name, False)
    return [
        (b"content-type", b"application/json"),
        (b"accept", b"application/json"),
        (b"origin", ORIGIN.encode()),
        (b"x-csrf-token", csrf.issue(session, made.bastion.keys).encode()),
        (b"cookie", f"{name}={session.id}".encode()),
        (b"idempotency-key", b"parallel"),
    ]


async def _saved_session(made: App) -> Session:
    """A session in ``made``'s store, as a rendered page leaves one."""
    session = Session()
    session.ensure()
    name = cookie_name(made.bastion.config.sessions.cookie_name, False)
    await made.bastion.session_manager.save(session, name, False)
    return session


async def _slow_pays_on_two_hosts(
    hosts: list[App],
    calls: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    stagger: float = 0.0,
) -> list[httpx.Response]:
    """``calls`` posts of ``body`` to ``slow_pay``, alternately on each host, call n
    ``stagger * n`` seconds after the first; the replies, as they came. The hosts are
    shut down after."""
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(h.app), base_url=ORIGIN) for h in hosts
    ]
    replies: list[httpx.Response] = []

    async def one(n: int) -> None:
        await anyio.sleep(stagger * n)
        url = hosts[n % 2].bastion.url_for("slow_pay")
        replies.append(await clients[n % 2].post(url, content=body, headers=headers))

    try:
        async with anyio.create_task_group() as group:
            for n in range(calls):
                group.start_soon(one, n)
    finally:
        for client in clients:
            await client.aclose()
        for host in hosts:
            await host.bastion.shutdown()
    return replies


def test_twenty_parallel_calls_with_one_key_run_the_handler_once(store_factory: Any) -> None:
    """Twenty calls with one key at the same moment, ten on each of two hosts sharing the
    store, into a handler that takes 0.2 s: it runs once. Every other call gets the
    first's reply or 409, never a second run and never anything else."""
    runs: list[int] = []
    hosts = [App(store_factory(), runs), App(store_factory(), runs)]

    async def main() -> list[httpx.Response]:
        session = await _saved_session(hosts[0])
        headers = _session_headers(hosts[0], session)
        return await _slow_pays_on_two_hosts(hosts, 20, b'{"amount": 7}', headers)

    replies = anyio.run(main)
    assert runs == [7]
    done = [r for r in replies if r.status_code == 200]
    busy = [r for r in replies if r.status_code == 409]
    assert len(done) + len(busy) == 20
    assert {r.content for r in done} == {b'{"ok":true,"data":{"number":1,"amount":7}}'}
    for reply in busy:
        assert reply.json()["error"]["code"] == "idempotency_in_progress"


def test_a_form_posted_again_while_the_first_runs_waits_and_lands_on_the_same_page(
    store_factory: Any,
) -> None:
    """A double click without JavaScript, the second post arriving while the first still
    runs (a 0.2 s handler), eight times over on two hosts: one run, and every post is
    answered as the first was (303 to its page), never a 409. The browser shows only the
    last reply: an error there would invite the visitor to post again, from a page with
    a new key."""
    runs: list[int] = []
    hosts = [App(store_factory(), runs), App(store_factory(), runs)]

    async def main() -> list[httpx.Response]:
        from bastion import csrf

        session = await _saved_session(hosts[0])
        name = cookie_name(hosts[0].bastion.config.sessions.cookie_name, False)
        spec = hosts[0].bastion.registry.get("slow_pay")
        body = "&".join(
            (
                "amount=9",
                f"_csrf={csrf.issue(session, hosts[0].bastion.keys)}",
                f"_idem={idempotency.issue(hosts[0].bastion.keys, spec, session)}",
                "_next=/paid",
            )
        ).encode()
        headers = [
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"origin", ORIGIN.encode()),
            (b"cookie", f"{name}={session.id}".encode()),
        ]
        # Each click after the first has claimed the key.
        return await _slow_pays_on_two_hosts(hosts, 8, body, headers, stagger=0.02)

    replies = anyio.run(main)
    assert runs == [9]
    assert [(r.status_code, r.headers.get("location")) for r in replies] == [(303, "/paid")] * 8


def test_a_script_repeat_while_the_first_runs_is_409_at_once(app: App) -> None:
    """The IETF draft's rule for a script's ``Idempotency-Key``: a repeat while the first
    call runs is answered 409 without waiting (the script decides when to retry)."""

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app.app), base_url=ORIGIN
        ) as client:
            session = await _saved_session(app)
            headers = _session_headers(app, session)
            url = app.bastion.url_for("slow_pay")
            replies: dict[int, httpx.Response] = {}

            async def one(n: int) -> None:
                await anyio.sleep(0.05 * n)
                started = time.monotonic()
                reply = await client.post(url, content=b'{"amount": 3}', headers=headers)
                reply.extensions["took"] = time.monotonic() - started
                replies[n] = reply

            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(one, 0)
                    group.start_soon(one, 1)
            finally:
                await app.bastion.shutdown()
            return [replies[0], replies[1]]

    first, second = anyio.run(main)
    assert (first.status_code, second.status_code) == (200, 409)
    assert second.json()["error"]["code"] == "idempotency_in_progress"
    assert second.extensions["took"] < 0.15  # answered, not held until the first ended
    assert app.runs == [3]


def test_a_refusal_is_kept_but_a_crash_releases_the_key(app: App) -> None:
    """A handler that refused (402 "declined") is not run again for its key: the repeat
    gets the same refusal; the same key with a corrected body runs. One that crashed
    (500) wrote nothing the key protects: the repeat runs it again."""
    with app.client() as client:
        first = pay(client, "r", action="refuse")
        again = pay(client, "r", action="refuse")
        assert (first.status_code, again.status_code) == (402, 402)
        assert again.content == first.content
        assert app.runs == [10]
        # The refused form, corrected (another body), takes the key over: it runs.
        assert pay(client, "r", 11, action="refuse").status_code == 402
        assert app.runs == [10, 11]
        assert pay(client, "c", 12, action="crash").status_code == 500
        assert pay(client, "c", 12, action="crash").status_code == 500
        assert app.runs == [10, 11, 12, 12]


def test_a_call_past_its_timeout_keeps_its_claim(app: App) -> None:
    """A handler past its deadline may still be running: a repeat gets 409, not a second
    run."""
    with app.client() as client:
        assert pay(client, "t", action="overrun").status_code == 504
        repeat = pay(client, "t", action="overrun")
        assert repeat.status_code == 409
        assert repeat.json()["error"]["code"] == "idempotency_in_progress"
    assert app.runs == [10]


def test_the_kept_reply_holds_no_cookie_and_its_key_no_raw_key() -> None:
    """What is kept is the reply without any Set-Cookie, under an HMAC of the key: the
    store never holds a visitor's key or cookie."""
    store = MemoryStore()
    app = App(store)
    with app.client() as client:
        pay(client, "secret-key-value")
        stored = [(k, v) for k, (v, _) in store._items.items() if k.startswith("idem:")]
    [(key, value)] = stored
    assert "secret-key-value" not in key
    record = json.loads(value)
    assert record["state"] == "done"
    assert all(name.lower() != "set-cookie" for name, _ in record["headers"])


def test_idempotent_must_be_a_bool() -> None:
    made = Bastion(secret_key=SECRET, allowed_origins=[ORIGIN], store=MemoryStore())
    with pytest.raises(ConfigurationError) as caught:

        @made.action(policy=public, idempotent="yes")  # type: ignore[arg-type]
        def pay(data: Payment) -> Receipt: ...

    assert str(caught.value) == "action 'pay': idempotent must be True or False, not 'yes'"


def test_the_page_form_carries_a_key_for_idempotent_actions_only() -> None:
    """``action_form()`` renders ``_idem`` for an idempotent action (a new key for each
    render), and none for another."""
    import jinja2

    made = App(MemoryStore())
    env = jinja2.Environment(autoescape=True)
    made.bastion.templates(env)
    template = env.from_string("{{ action_form(name) }}")
    session = Session()
    request = type("R", (), {"scope": {"bastion.session": session}})()
    first = template.render(name="pay", request=request)
    second = template.render(name="pay", request=request)
    plain = template.render(name="plain_pay", request=request)
    assert first.count('name="_idem"') == second.count('name="_idem"') == 1
    assert first != second
    assert 'name="_idem"' not in plain
