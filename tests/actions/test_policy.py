"""Stage 6, policies: the vocabulary, composition, the 401-versus-403 rule, object-level
checks after validation (``check=``), and ``ctx.authorize`` / ``ctx.user`` in handlers.

The unit tests decide with the real ``authorize`` on a real ``Context`` whose session is
signed in (or not); the wire tests go through the whole pipeline with ``ActionClient``
and a ``sign_in`` action that calls the real ``ctx.login``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from conftest import SECRET, mounted
from helpers import assert_reply
from pydantic import BaseModel, ConfigDict, Field

from bastion import (
    ActionError,
    Bastion,
    ConfigurationError,
    Context,
    Forbidden,
    Policy,
    Unauthorized,
    User,
    authenticated,
    predicate,
    public,
    require,
)
from bastion.actions.policy import authorize
from bastion.sessions import Session
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

UNAUTHORIZED = {"ok": False, "error": {"code": "unauthorized", "message": "Please sign in first."}}
FORBIDDEN = {
    "ok": False,
    "error": {"code": "forbidden", "message": "You are not allowed to do that."},
}
DIGEST = re.compile(r"[0-9a-f]{16}")

AUTHOR = User(1, roles=frozenset({"author"}), permissions=frozenset({"post:create", "post:edit"}))
READER = User(2)
ADMIN = User(3, roles=frozenset({"admin"}), permissions=frozenset({"post:create", "stats:read"}))
USERS: dict[str | int, User] = {u.id: u for u in (AUTHOR, READER, ADMIN)}


def internal(response: httpx.Response) -> dict[str, Any]:
    """The generic 500 envelope, with the digest this reply carries."""
    digest = response.json()["error"]["digest"]
    assert DIGEST.fullmatch(digest)
    return {
        "ok": False,
        "error": {"code": "internal", "message": "Something went wrong.", "digest": digest},
    }


# --- deciding on a real Context -------------------------------------------------------------


def context(user: User | None) -> Context:
    """A Context as the pipeline builds it, for a session signed in as ``user`` (or not)."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), load_user=USERS.get)
    record: dict[str, Any] = {"user": user.id} if user is not None else {}
    session = Session("s" * 43, record)
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "client": None}
    return Context(
        action="act",
        scope=scope,
        session=session,
        client=bastion.client_address(scope),
        load_user=bastion.load_user,
        password_check=bastion.password_check,
    )


def decide(policy: Policy, user: User | None) -> str | int:
    """What stage 6 answers: "allow", 401 or 403 (the user loaded first if needed)."""

    async def run() -> str | int:
        ctx = context(user)
        if policy.needs_user:
            await ctx.current_user()
        try:
            await authorize(policy, ctx)
        except Unauthorized:
            return 401
        except Forbidden:
            return 403
        return "allow"

    return anyio.run(run)


def test_public_allows_everyone_without_loading_a_user() -> None:
    """public allows anonymous and signed-in callers, and needs no user loaded."""
    assert public.needs_user is False
    assert decide(public, None) == "allow"
    assert decide(public, READER) == "allow"
    assert repr(public) == "public"


def test_authenticated_allows_any_signed_in_user_and_asks_anonymous_to_sign_in() -> None:
    """authenticated: any user (no role needed) is allowed; nobody signed in is 401."""
    assert authenticated.needs_user is True
    assert decide(authenticated, READER) == "allow"
    assert decide(authenticated, AUTHOR) == "allow"
    assert decide(authenticated, None) == 401
    assert repr(authenticated) == "authenticated"


def test_require_permissions_needs_every_permission_named() -> None:
    """require("a", "b") allows only a user holding both; lacking one is 403."""
    assert decide(require("post:create"), AUTHOR) == "allow"
    assert decide(require("post:create", "post:edit"), AUTHOR) == "allow"
    assert decide(require("post:create", "stats:read"), AUTHOR) == 403
    assert decide(require("post:create", "stats:read"), ADMIN) == "allow"
    assert decide(require("post:create"), READER) == 403
    assert decide(require("post:create"), None) == 401


def test_require_roles_needs_at_least_one_role_named() -> None:
    """require(roles={...}) allows a user with any one of the roles; none of them is 403."""
    either = require(roles={"author", "admin"})
    assert decide(either, AUTHOR) == "allow"
    assert decide(either, ADMIN) == "allow"
    assert decide(either, READER) == 403
    assert decide(either, None) == 401


def test_require_permissions_and_roles_needs_both() -> None:
    """With permissions and roles, the user needs every permission and one of the roles."""
    policy = require("post:create", roles={"admin"})
    assert decide(policy, ADMIN) == "allow"
    assert decide(policy, AUTHOR) == 403  # the permission, not the role
    assert decide(require("stats:read", roles={"author"}), ADMIN) == 403  # the reverse
    assert repr(policy) == "require('post:create', roles=['admin'])"
    assert repr(require("b", "a", roles=["y", "x"])) == "require('a', 'b', roles=['x', 'y'])"


def test_require_refuses_nothing_to_require_and_a_single_role_string() -> None:
    """require() with no permission or role, or roles="admin" (one string), is a TypeError."""
    with pytest.raises(TypeError, match=r"^require\(\) needs at least one permission or role$"):
        require()
    with pytest.raises(TypeError, match=r"^roles= takes a collection of role names"):
        require(roles="admin")


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [(True, "allow"), (False, 403), (None, 403), (1, 403), ("yes", 403), ([True], 403)],
)
def test_predicate_allows_only_a_plain_true(verdict: object, expected: str | int) -> None:
    """predicate(fn): exactly True allows; False, None or any other truthy value denies."""
    assert decide(predicate(lambda ctx: verdict), READER) == expected


def test_predicate_may_be_async() -> None:
    """An async predicate is awaited: its True allows, its False denies."""

    async def yes(ctx: Context) -> bool:
        await anyio.sleep(0)
        return True

    async def no(ctx: Context) -> bool:
        return False

    assert decide(predicate(yes), READER) == "allow"
    assert decide(predicate(no), READER) == 403
    assert repr(predicate(yes)) == ("predicate(test_predicate_may_be_async.<locals>.yes)")


def test_predicate_sees_the_signed_in_user() -> None:
    """A predicate's ctx.user is the loaded user (or None for an anonymous caller)."""
    is_author = predicate(lambda ctx: ctx.user is not None and ctx.user.id == AUTHOR.id)
    assert decide(is_author, AUTHOR) == "allow"
    assert decide(is_author, READER) == 403
    assert decide(is_author, None) == 403  # a predicate does not ask to sign in


def test_predicate_needs_a_callable() -> None:
    """predicate("admin") is a TypeError, not a policy that silently denies."""
    with pytest.raises(TypeError, match=r"^predicate\(\) takes a callable, not 'admin'$"):
        predicate("admin")  # type: ignore[arg-type]


def recording(log: list[str], name: str, verdict: bool) -> Policy:
    def decide_and_note(ctx: Context) -> bool:
        log.append(name)
        return verdict

    return predicate(decide_and_note)


def test_and_runs_left_to_right_and_stops_at_the_first_denial() -> None:
    """a & b & c: all must allow; evaluated in order, nothing after a denial runs."""
    log: list[str] = []
    both = recording(log, "a", True) & recording(log, "b", False) & recording(log, "c", True)
    assert decide(both, READER) == 403
    assert log == ["a", "b"]
    log.clear()
    allowed = recording(log, "a", True) & recording(log, "b", True)
    assert decide(allowed, READER) == "allow"
    assert log == ["a", "b"]


def test_or_runs_left_to_right_and_stops_at_the_first_allow() -> None:
    """a | b | c: one must allow; evaluated in order, nothing after an allow runs."""
    log: list[str] = []
    either = recording(log, "a", False) | recording(log, "b", True) | recording(log, "c", True)
    assert decide(either, READER) == "allow"
    assert log == ["a", "b"]
    log.clear()
    neither = recording(log, "a", False) | recording(log, "b", False)
    assert decide(neither, READER) == 403
    assert log == ["a", "b"]


def test_and_binds_tighter_than_or() -> None:
    """Python's precedence: a | b & c is a | (b & c)."""
    log: list[str] = []
    policy = recording(log, "a", False) | recording(log, "b", True) & recording(log, "c", False)
    assert decide(policy, READER) == 403
    assert log == ["a", "b", "c"]
    assert policy.describe() == (
        "(predicate(recording.<locals>.decide_and_note)) | "
        "((predicate(recording.<locals>.decide_and_note)) & "
        "(predicate(recording.<locals>.decide_and_note)))"
    )


def test_composition_describes_itself() -> None:
    """& and | describe their parts in order, for logs and bastion audit."""
    assert repr(authenticated & require("x")) == "(authenticated) & (require('x'))"
    assert repr(public | authenticated) == "(public) | (authenticated)"


def test_composing_with_a_plain_callable_is_a_type_error() -> None:
    """Policies combine with policies only: a bare function must be wrapped in predicate()."""
    with pytest.raises(TypeError, match=r"wrap it in predicate\(\)$"):
        authenticated & (lambda ctx: True)  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"wrap it in predicate\(\)$"):
        authenticated | True  # type: ignore[operator]


def test_composition_needs_a_user_when_any_part_does() -> None:
    """A composite loads the user if any part needs one; public & public does not."""
    assert (public & public).needs_user is False
    assert (public | authenticated).needs_user is True
    assert (public & predicate(lambda ctx: True)).needs_user is True


@pytest.mark.parametrize(
    ("policy", "user", "status"),
    [
        pytest.param(authenticated, None, 401, id="authenticated-anonymous"),
        pytest.param(require("post:create"), None, 401, id="require-anonymous"),
        pytest.param(require(roles={"admin"}), None, 401, id="require-roles-anonymous"),
        pytest.param(require("post:create"), READER, 403, id="require-user-lacking"),
        pytest.param(require(roles={"admin"}), AUTHOR, 403, id="require-roles-user-lacking"),
        pytest.param(predicate(lambda ctx: False), None, 403, id="predicate-anonymous"),
        pytest.param(predicate(lambda ctx: False), READER, 403, id="predicate-user"),
        pytest.param(authenticated & predicate(lambda ctx: False), None, 401, id="and-anonymous"),
        pytest.param(authenticated & predicate(lambda ctx: False), READER, 403, id="and-user"),
        pytest.param(predicate(lambda ctx: False) | require("x"), None, 401, id="or-anonymous"),
        pytest.param(predicate(lambda ctx: False) | require("x"), READER, 403, id="or-user"),
    ],
)
def test_denial_is_401_for_anonymous_callers_of_a_sign_in_policy_else_403(
    policy: Policy, user: User | None, status: int
) -> None:
    """401 only when nobody is signed in and the policy is about signed-in users
    (authenticated, require, or a composite holding one); every other denial is 403."""
    assert decide(policy, user) == status


def test_a_policy_subclass_is_a_policy() -> None:
    """A Policy subclass answers in allows(); needs_user=False skips loading the user."""

    class Never(Policy):
        needs_user = False

        def allows(self, ctx: Context) -> bool:
            return False

    assert decide(Never(), None) == 403
    assert decide(Never() | public, None) == "allow"
    assert repr(Never()) == "Never"


# --- on the wire ------------------------------------------------------------------------------


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int


class PostRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    post_id: int = Field(ge=1)


class Done(BaseModel):
    by: int | None


@dataclass
class Site:
    bastion: Bastion
    ran: list[str] = field(default_factory=list)
    """The handlers that ran, in order."""
    checked: list[Any] = field(default_factory=list)
    """What each check= received as its data."""

    def client(self) -> ActionClient:
        return ActionClient(mounted(self.bastion), self.bastion)

    def action(self, name: str, policy: Any, **kwargs: Any) -> None:
        """Register ``name``: records that it ran, answers who called."""

        async def handler(ctx: Context) -> Done:
            self.ran.append(name)
            user = await ctx.current_user()
            return Done(by=user.id if user is not None else None)

        self.bastion.action(policy=policy, name=name, **kwargs)(handler)

    def action_on_post(self, name: str, policy: Any, **kwargs: Any) -> None:
        """Register ``name`` taking a PostRef; records that it ran."""

        async def handler(ctx: Context, data: PostRef) -> Done:
            self.ran.append(name)
            return Done(by=data.post_id)

        self.bastion.action(policy=policy, name=name, **kwargs)(handler)


@pytest.fixture
def site() -> Site:
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), load_user=USERS.get)

    @bastion.action(policy=public)
    async def sign_in(ctx: Context, data: SignIn) -> None:
        await ctx.login(USERS[data.id])

    return Site(bastion)


@pytest.fixture
def as_user(site: Site) -> Iterator[Callable[[User | None], ActionClient]]:
    """A fresh client per call, signed in through the sign_in action as the user given
    (None: anonymous)."""
    with ExitStack() as stack:

        def make(user: User | None) -> ActionClient:
            client = stack.enter_context(site.client())
            if user is not None:
                assert client.call("sign_in", {"id": user.id}).status_code == 200
            return client

        yield make


def test_authenticated_action_answers_401_to_anonymous_without_running(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """Anonymous → 401 unauthorized envelope, handler not run; signed in → 200."""
    site.action("mine", authenticated)
    assert_reply(as_user(None).call("mine"), 401, UNAUTHORIZED)
    assert site.ran == []
    assert_reply(as_user(READER).call("mine"), 200, {"ok": True, "data": {"by": READER.id}})
    assert site.ran == ["mine"]


def test_require_action_answers_403_to_a_user_lacking_and_401_to_anonymous(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """require("stats:read"): anonymous 401, a user without it 403 (neither runs), the
    admin who holds it 200."""
    site.action("stats", require("stats:read"))
    assert_reply(as_user(None).call("stats"), 401, UNAUTHORIZED)
    assert_reply(as_user(AUTHOR).call("stats"), 403, FORBIDDEN)
    assert site.ran == []
    assert_reply(as_user(ADMIN).call("stats"), 200, {"ok": True, "data": {"by": ADMIN.id}})
    assert site.ran == ["stats"]


def test_plain_function_is_a_policy(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """policy=fn (sync or async) works as predicate(fn): True allows, else 403 (also for
    an anonymous caller: a plain function says nothing about signing in)."""

    def only_the_author(ctx: Context) -> bool:
        return ctx.user is not None and ctx.user.id == AUTHOR.id

    async def only_the_admin(ctx: Context) -> bool:
        return ctx.user is not None and ctx.user.id == ADMIN.id

    site.action("sync", only_the_author)
    site.action("async", only_the_admin)
    assert site.bastion.registry.get("sync").policy.describe() == (
        "predicate(test_plain_function_is_a_policy.<locals>.only_the_author)"
    )
    assert_reply(as_user(None).call("sync"), 403, FORBIDDEN)
    assert_reply(as_user(READER).call("sync"), 403, FORBIDDEN)
    assert_reply(as_user(AUTHOR).call("async"), 403, FORBIDDEN)
    assert site.ran == []
    assert_reply(as_user(AUTHOR).call("sync"), 200, {"ok": True, "data": {"by": AUTHOR.id}})
    assert_reply(as_user(ADMIN).call("async"), 200, {"ok": True, "data": {"by": ADMIN.id}})
    assert site.ran == ["sync", "async"]


def test_action_without_a_policy_does_not_register(site: Site) -> None:
    """Deny by default, decided at import time: no policy, no action."""
    with pytest.raises(ConfigurationError, match=r"^action 'orphan' declares no policy: "):
        site.action("orphan", None)
    with pytest.raises(LookupError):
        site.bastion.registry.get("orphan")


# --- check=: object-level, after validation ----------------------------------------------


def test_check_receives_the_validated_input(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """check(ctx, data) gets the model instance, already validated (the string "7"
    coerced to 7), and the signed-in user on ctx; True lets the handler run."""

    def owns(ctx: Context, data: PostRef) -> bool:
        site.checked.append((data, ctx.user))
        return True

    site.action_on_post("edit", authenticated, check=owns)
    reply = as_user(AUTHOR).call("edit", {"post_id": "7"})
    assert_reply(reply, 200, {"ok": True, "data": {"by": 7}})
    assert site.checked == [(PostRef(post_id=7), AUTHOR)]
    assert type(site.checked[0][0]) is PostRef
    assert site.ran == ["edit"]


@pytest.mark.parametrize("verdict", [False, None, 1, "yes"])
def test_check_denial_is_403_and_the_handler_does_not_run(
    site: Site, as_user: Callable[[User | None], ActionClient], verdict: object
) -> None:
    """Anything but True from check= answers 403 forbidden; the handler never runs."""
    site.action_on_post("edit", authenticated, check=lambda ctx, data: verdict)
    assert_reply(as_user(AUTHOR).call("edit", {"post_id": 7}), 403, FORBIDDEN)
    assert site.ran == []


def test_async_check_is_awaited(site: Site, as_user: Callable[[User | None], ActionClient]) -> None:
    """An async check= is awaited: the author of post 1 may edit it, not post 2."""

    async def owns(ctx: Context, data: PostRef) -> bool:
        return data.post_id == 1

    site.action_on_post("edit", authenticated, check=owns)
    client = as_user(AUTHOR)
    assert_reply(client.call("edit", {"post_id": 2}), 403, FORBIDDEN)
    assert_reply(client.call("edit", {"post_id": 1}), 200, {"ok": True, "data": {"by": 1}})
    assert site.ran == ["edit"]


def test_invalid_input_is_422_before_the_check_runs(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """check= runs after validation: invalid input answers 422, not the check's 403."""

    def never(ctx: Context, data: PostRef) -> bool:
        site.checked.append(data)
        return False

    site.action_on_post("edit", authenticated, check=never)
    assert_reply(
        as_user(AUTHOR).call("edit", {"post_id": 0}),
        422,
        {
            "ok": False,
            "error": {
                "code": "invalid",
                "message": "Some fields are invalid.",
                "fields": {"post_id": "Input should be greater than or equal to 1"},
            },
        },
    )
    assert site.checked == []
    assert site.ran == []


def test_check_runs_after_the_policy(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """An anonymous caller of an authenticated action is 401; its check never runs."""

    def allow(ctx: Context, data: PostRef) -> bool:
        site.checked.append(data)
        return True

    site.action_on_post("edit", authenticated, check=allow)
    assert_reply(as_user(None).call("edit", {"post_id": 1}), 401, UNAUTHORIZED)
    assert site.checked == []
    assert site.ran == []


def test_check_may_refuse_with_its_own_action_error(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """An ActionError raised in check= is the answer (e.g. 404 to hide another's post)."""

    def hide(ctx: Context, data: PostRef) -> bool:
        raise ActionError("No such post.", code="not_found", status=404)

    site.action_on_post("edit", authenticated, check=hide)
    assert_reply(
        as_user(AUTHOR).call("edit", {"post_id": 1}),
        404,
        {"ok": False, "error": {"code": "not_found", "message": "No such post."}},
    )
    assert site.ran == []


def test_check_must_be_callable(site: Site) -> None:
    """check="owner" is refused at registration, naming the action."""
    with pytest.raises(ConfigurationError, match=r"^action 'edit': check must be callable"):
        site.action_on_post("edit", authenticated, check="owner")


# --- inside the handler: ctx.authorize, ctx.user ---------------------------------------------


def test_ctx_authorize_false_is_403_with_the_message_given(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """ctx.authorize(False, message) stops the handler there with 403 and that message;
    ctx.authorize(True) lets it go on."""

    @site.bastion.action(policy=authenticated)
    def edit(ctx: Context, data: PostRef) -> Done:
        site.ran.append("before")
        ctx.authorize(data.post_id == 1, "You can only edit your own posts.")
        site.ran.append("after")
        return Done(by=data.post_id)

    client = as_user(AUTHOR)
    assert_reply(
        client.call(edit, {"post_id": 2}),
        403,
        {
            "ok": False,
            "error": {"code": "forbidden", "message": "You can only edit your own posts."},
        },
    )
    assert site.ran == ["before"]
    assert_reply(client.call(edit, {"post_id": 1}), 200, {"ok": True, "data": {"by": 1}})
    assert site.ran == ["before", "before", "after"]


def test_ctx_authorize_refuses_anything_but_true(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """ctx.authorize(1) (truthy, not True) is 403 with the default message."""

    @site.bastion.action(policy=authenticated)
    def edit(ctx: Context) -> None:
        ctx.authorize(1)
        site.ran.append("after")

    assert_reply(as_user(AUTHOR).call(edit), 403, FORBIDDEN)
    assert site.ran == []


def test_ctx_user_is_the_loaded_user_in_an_action_whose_policy_needs_one(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """Behind authenticated, ctx.user is the Principal load_user returned."""

    @site.bastion.action(policy=authenticated)
    def whoami(ctx: Context) -> Done:
        assert ctx.user is AUTHOR
        return Done(by=ctx.user.id)

    assert_reply(as_user(AUTHOR).call(whoami), 200, {"ok": True, "data": {"by": AUTHOR.id}})


def test_ctx_user_in_a_public_action_raises_when_someone_is_signed_in(
    site: Site,
    as_user: Callable[[User | None], ActionClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A public action does not load the user: reading ctx.user while signed in raises
    RuntimeError (a generic 500 for the client), rather than answer None for a user."""

    @site.bastion.action(policy=public)
    def peek(ctx: Context) -> Done:
        user = ctx.user
        site.ran.append("after")
        return Done(by=user.id if user is not None else None)

    caplog.set_level(logging.ERROR, logger="bastion")
    reply = as_user(AUTHOR).call(peek)
    assert_reply(reply, 500, internal(reply))
    assert site.ran == []
    [record] = [r for r in caplog.records if r.name == "bastion"]
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError
    assert str(record.exc_info[1]) == (
        "ctx.user is not loaded for this action's policy: use await ctx.current_user()"
    )


def test_ctx_user_in_a_public_action_is_none_for_an_anonymous_caller(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """Nobody signed in: ctx.user is None even in a public action (nothing to load)."""

    @site.bastion.action(policy=public)
    def peek(ctx: Context) -> Done:
        return Done(by=ctx.user.id if ctx.user is not None else None)

    assert_reply(as_user(None).call(peek), 200, {"ok": True, "data": {"by": None}})


def test_current_user_works_in_a_public_action(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """await ctx.current_user() loads the user in a public action; ctx.user then works."""

    @site.bastion.action(policy=public)
    async def hello(ctx: Context) -> Done:
        user = await ctx.current_user()
        assert ctx.user is user
        return Done(by=user.id if user is not None else None)

    assert_reply(as_user(READER).call(hello), 200, {"ok": True, "data": {"by": READER.id}})
    assert_reply(as_user(None).call(hello), 200, {"ok": True, "data": {"by": None}})


def test_a_policy_that_raises_is_a_generic_500_and_the_handler_does_not_run(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """A policy's own bug fails closed: 500 internal, digest, handler not run."""

    def broken(ctx: Context) -> bool:
        raise KeyError("team")

    site.action("guarded", broken)
    reply = as_user(AUTHOR).call("guarded")
    assert_reply(reply, 500, internal(reply))
    assert site.ran == []


def test_policy_checks_come_before_the_body_is_read(
    site: Site, as_user: Callable[[User | None], ActionClient]
) -> None:
    """An anonymous caller with a malformed body gets 401, not 400: nothing of the body
    is decoded for a caller the policy refuses."""
    site.action_on_post("edit", authenticated)
    client = as_user(None)
    reply = client.post(
        client.url("edit"),
        content=b"{not json",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    assert_reply(reply, 401, UNAUTHORIZED)
    assert site.ran == []
