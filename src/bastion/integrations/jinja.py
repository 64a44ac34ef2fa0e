"""Jinja helpers, so a template never writes an action URL or a token by hand.

::

    bastion.templates(templates)   # a Starlette Jinja2Templates or a jinja2.Environment

    {% set outcome = flash('greet') %}
    {% call action_form('greet', next='/') %}   {# bind={'post_id': 42} seals values #}
      <input name="name" value="{{ outcome.values.name if outcome else '' }}">
      <button>Greet</button>
    {% endcall %}
    {{ bastion_script() }}

A page whose own scripts call actions (``bastion.call`` in ``bastion.js``) puts the
token in its head, where any script of the page reads it::

    <head>{{ csrf_meta() }}</head>   {# <meta name="csrf-token" content="…"> #}

A page that loads htmx puts its configuration in its head, made for this response::

    <head>{{ htmx_config() }}</head>   {# <meta name="htmx-config" content='{…}'> #}

The helpers that need the visitor's session (``csrf_input``, ``csrf_meta``,
``bastion_fields``, ``action_form``, ``flash``) read it from the template's ``request``,
which Starlette's ``TemplateResponse`` provides.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import pydantic_core
from jinja2 import pass_context
from jinja2.runtime import Context
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup, escape

from bastion import csrf, idempotency
from bastion.http.headers import NONCE_KEY
from bastion.http.responses import safe_next
from bastion.pipeline.flash import Flash
from bastion.pipeline.stages import binding
from bastion.sessions import FLASH_KEY, get_session

if TYPE_CHECKING:
    import jinja2

    from bastion.pipeline.runtime import Runtime

__all__ = ["REFUSAL_TARGET", "htmx_settings", "install"]

REFUSAL_TARGET: Final = (
    "find [data-bastion-message], "
    "previous [data-bastion-message=page], next [data-bastion-message=page], "
    "previous meta[name=htmx-config]"
)
"""Where htmx puts a refusal, tried in order from the element that sent the request (the
one with ``hx-post``): the ``data-bastion-message`` slot inside it (a form's own); else
the page's ``data-bastion-message="page"`` slot, before or after it; else the ``<meta
name="htmx-config">`` itself, where nothing shows but nothing breaks (htmx still reports
the refusal). Never the request's own target: a 403 swapped ``outerHTML`` into a list
item would delete the item from the page. And never nothing: htmx fails on a selector
that finds no element, and leaves the request's indicator on. Each part is one of htmx's
extended selectors (``find``, ``previous``, ``next``) because htmx puts the matches of
plain CSS parts after those, in document order: a plain ``meta[…]`` would win over a
page slot further down."""


def install(runtime: Runtime, target: Any) -> None:
    """Add the helpers to ``target``'s globals; they read the app's keys, actions and
    prefix from ``runtime``."""
    env: jinja2.Environment = getattr(target, "env", target)
    # An htmx fragment gets the action's output model as ``data``: ``|tojson`` writes it
    # (and a Decimal, a datetime, an enum) as the action's JSON reply would.
    env.policies["json.dumps_function"] = _dumps
    prefix = runtime.config.prefix
    script_url = f"{prefix}/bastion.js"

    def url_for(action: Callable[..., Any] | str) -> str:
        return f"{prefix}/{runtime.registry.get(action).id}"

    def token(context: Context) -> str:
        request = context.get("request")
        if request is None:
            raise RuntimeError("bastion's form helpers need `request` in the template context")
        return csrf.issue(get_session(request.scope), runtime.keys)

    @pass_context
    def csrf_input(context: Context) -> Markup:
        """The hidden ``_csrf`` input, with a token masked afresh for this render."""

        return Markup('<input type="hidden" name="{}" value="{}">').format(
            csrf.FIELD, token(context)
        )

    @pass_context
    def csrf_meta(context: Context) -> Markup:
        """``<meta name="csrf-token">`` for the page's scripts, with a token masked afresh
        for this render (``bastion.call`` reads it; so can a script of the page's own)."""
        return Markup('<meta name="csrf-token" content="{}">').format(token(context))

    @pass_context
    def bastion_fields(context: Context, next: str | None = None) -> Markup:
        """Every hidden input an action form carries: the token, and where to go after."""
        fields = csrf_input(context)
        if next is not None:
            checked = safe_next(next)
            if checked is None:
                raise ValueError(f"next={next!r} is not a same-origin relative path")
            fields += Markup('<input type="hidden" name="_next" value="{}">').format(checked)
        return fields

    @pass_context
    def bound_input(context: Context, action: str, values: dict[str, Any]) -> Markup:
        """The hidden ``_bound`` input: ``values`` sealed for ``action`` (and, for a
        signed-in visitor, their session)."""
        request = context.get("request")
        session = get_session(request.scope) if request is not None else None
        sealed = binding.seal(runtime.keys, runtime.registry.get(action), values, session)
        return Markup('<input type="hidden" name="_bound" value="{}">').format(sealed)

    @pass_context
    def idempotency_input(context: Context, action: str) -> Markup:
        """The hidden ``_idem`` input of an ``idempotent=True`` action's form: a key made
        for this render, so a second submit of the same page runs nothing twice."""
        request = context.get("request")
        if request is None:
            raise RuntimeError("bastion's form helpers need `request` in the template context")
        key = idempotency.issue(
            runtime.keys, runtime.registry.get(action), get_session(request.scope)
        )
        return Markup('<input type="hidden" name="{}" value="{}">').format(idempotency.FIELD, key)

    @pass_context
    def action_form(
        context: Context,
        action: str,
        next: str | None = None,
        bind: dict[str, Any] | None = None,
        caller: Callable[[], str] | None = None,
        **attributes: str,
    ) -> Markup:
        """A whole ``<form>`` for an action: method, URL, encoding and hidden fields,
        with ``bind`` values sealed in ``_bound``."""
        spec = runtime.registry.get(action)
        attrs = Markup("").join(
            Markup(' {}="{}"').format(name.rstrip("_").replace("_", "-"), value)
            for name, value in attributes.items()
        )
        enctype = Markup(' enctype="multipart/form-data"') if spec.accepts_uploads else Markup("")
        return (
            Markup('<form method="post" action="{}"{}{} data-bastion>').format(
                url_for(action), enctype, attrs
            )
            + bastion_fields(context, next)
            + (bound_input(context, action, bind) if bind is not None else Markup(""))
            + (idempotency_input(context, action) if spec.idempotent else Markup(""))
            # The call block's body is template source, rendered (and escaped) by Jinja.
            + Markup(caller() if caller is not None else "")  # noqa: S704
            + Markup("</form>")
        )

    @pass_context
    def flash(context: Context, action: str | None = None) -> Flash | None:
        """What the last plain form post left for this page (once), for ``action`` or any."""
        request = context.get("request")
        stored: dict[str, Any] | None = request.scope.get(FLASH_KEY) if request else None
        if stored is None or (action is not None and stored.get("action") != action):
            return None
        return Flash.from_dict(stored)

    @pass_context
    def csp_nonce(context: Context) -> str:
        """This response's CSP nonce, for inline ``<script nonce=…>`` and ``<style nonce=…>``
        (empty when ``add_security_headers`` is not in use)."""
        request = context.get("request")
        nonce: str = request.scope.get(NONCE_KEY, "") if request is not None else ""
        return nonce

    @pass_context
    def htmx_config(context: Context, **overrides: Any) -> Markup:
        """``<meta name="htmx-config">`` for this response: htmx configured to work under
        bastion's CSP and to show bastion's refusals (see ``htmx_settings``). Each keyword
        replaces one of htmx's settings, by htmx's own name (``defaultSwapStyle="outerHTML"``);
        values must be JSON."""
        settings = {**htmx_settings(csp_nonce(context)), **overrides}
        # JSON with < > & ' as \u escapes: inert in a single-quoted attribute, whatever
        # an override holds, and JSON.parse reads back exactly the same values. NaN is
        # refused: htmx would drop the whole configuration it cannot parse.
        content = htmlsafe_json_dumps(
            settings, dumps=json.dumps, separators=(",", ":"), allow_nan=False
        )
        return Markup("""<meta name="htmx-config" content='{}'>""").format(content)

    @pass_context
    def bastion_script(context: Context) -> Markup:
        nonce = csp_nonce(context)
        if nonce:
            return Markup('<script src="{}" nonce="{}" defer></script>').format(script_url, nonce)
        return Markup('<script src="{}" defer></script>').format(escape(script_url))

    env.globals.update(
        action_url=url_for,
        action_form=action_form,
        bastion_fields=bastion_fields,
        bastion_script=bastion_script,
        bound_input=bound_input,
        csp_nonce=csp_nonce,
        csrf_input=csrf_input,
        csrf_meta=csrf_meta,
        flash=flash,
        htmx_config=htmx_config,
        idempotency_input=idempotency_input,
    )


def htmx_settings(nonce: str) -> dict[str, Any]:
    """htmx 2's configuration for a page of this response (``nonce``: its CSP nonce, or
    ``""`` without ``add_security_headers``).

    - ``inlineStyleNonce``: htmx adds one ``<style>`` of its own, which hides each
      ``.htmx-indicator`` until its request is in flight; under the strict CSP only the
      response's nonce lets it apply (else every indicator shows all the time).
    - ``allowScriptTags: false``, and no ``inlineScriptNonce``: a ``<script>`` in a swapped
      fragment is dropped. Given the nonce, htmx would run every script a response holds,
      an injected one too: the nonce would stop protecting anything htmx swaps in.
    - ``allowEval: false``: no ``hx-on``, ``js:`` values or trigger filters, which the CSP
      refuses anyway (no ``'unsafe-eval'``); htmx does not even try.
    - ``selfRequestsOnly: true`` (htmx 2's default, pinned): a form's token never goes to
      another origin.
    - ``responseHandling``: htmx's own rules, but a 4xx/5xx is swapped too (htmx swaps none
      by default, so the visitor would see nothing), into ``REFUSAL_TARGET``, with
      ``innerHTML`` whatever the element's ``hx-swap`` says, and still reported as an
      error (``htmx:responseError``). The reply keeps its status.
    """
    settings: dict[str, Any] = {"allowEval": False, "allowScriptTags": False}
    if nonce:
        settings["inlineStyleNonce"] = nonce
    settings["selfRequestsOnly"] = True
    settings["responseHandling"] = [
        {"code": "204", "swap": False},
        {"code": "[23]..", "swap": True},
        {
            "code": "[45]..",
            "swap": True,
            "error": True,
            "target": REFUSAL_TARGET,
            "swapOverride": "innerHTML",
        },
    ]
    return settings


def _dumps(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, default=pydantic_core.to_jsonable_python, **kwargs)
