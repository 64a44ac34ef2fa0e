"""Jinja helpers: the URL of an action, the hidden fields its form needs, the script.

::

    bastion.templates(templates)   # a Starlette Jinja2Templates or a jinja2.Environment

    <form method="post" action="{{ action_url('greet') }}" data-bastion>
      {{ bastion_fields(next='/thanks') }}
      ...
    </form>
    {{ bastion_script() }}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from markupsafe import Markup, escape

from .responses import safe_next

if TYPE_CHECKING:
    import jinja2

    from .app import Bastion

__all__ = ["install"]


def install(bastion: Bastion, target: Any) -> None:
    env: jinja2.Environment = getattr(target, "env", target)

    def bastion_fields(next: str | None = None) -> Markup:
        """Hidden inputs every action form carries (where to go after a plain post)."""
        parts = []
        checked = safe_next(next)
        if next is not None and checked is None:
            raise ValueError(f"next={next!r} is not a same-origin relative path")
        if checked is not None:
            parts.append(Markup('<input type="hidden" name="_next" value="{}">').format(checked))
        return Markup("").join(parts)

    def bastion_script() -> Markup:
        return Markup('<script src="{}" defer></script>').format(escape(bastion.script_url))

    env.globals.update(
        action_url=bastion.url_for,
        bastion_fields=bastion_fields,
        bastion_script=bastion_script,
    )
