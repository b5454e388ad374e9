"""The ops page's HTML, rendered on the server: the login form, the page, a trace's waterfall.

Every value is escaped. The page's behaviour is one small script (`static/ops.js`, no build
step) that fills the service cards from the event stream and posts the operator's actions.
The pages carry their own Content-Security-Policy: scripts, styles and connections to this
origin only, no inline script, no framing.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from importlib import resources

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: The page's files, by URL name: (package file, media type).
STATIC = {
    "ops.js": ("ops.js", "text/javascript; charset=utf-8"),
    "ops.css": ("ops.css", "text/css; charset=utf-8"),
}


def static_file(name: str) -> tuple[bytes, str] | None:
    """The bytes and media type of one of the page's files, or None."""
    entry = STATIC.get(name)
    if entry is None:
        return None
    return resources.files("gateway.ops").joinpath("static", entry[0]).read_bytes(), entry[1]


@dataclass(frozen=True)
class Card:
    """One service on the page, and which switches it has."""

    name: str
    faults: bool
    read_only: bool
    canary: bool


def _shell(title: str, body: str, *, head: str = "") -> str:
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>{head}"
        '<link rel=stylesheet href="/ops/static/ops.css"></head>'
        f"<body>{body}</body></html>\n"
    )


def login_page(error: str | None = None) -> str:
    """The login form: an operator name for the action log, and the admin token."""
    message = f"<p class=error role=alert>{escape(error)}</p>" if error else ""
    return _shell(
        "Ops: log in",
        "<main class=login><h1>Ops</h1>"
        "<p>Operators only: log in with the gateway's admin token.</p>"
        f"{message}"
        '<form method=post action="/ops/login">'
        "<label>Your name <input name=operator required maxlength=48 "
        'pattern="[A-Za-z0-9][A-Za-z0-9 ._@\\-]{0,47}" autocomplete=username></label>'
        "<label>Admin token <input name=token type=password required maxlength=512 "
        "autocomplete=current-password></label>"
        "<button type=submit>Log in</button></form></main>",
    )


#: The RED sparklines: (caption, key of the data).
RED = (("req/s", "rps"), ("errors %", "error_pct"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"))


def _number(label: str, name: str, top: float, step: float) -> str:
    field = f"<input name={name} type=number min=0 max={top} step={step} value=0>"
    return f"<label>{label} {field}</label>"


def _spark(label: str, key: str) -> str:
    return (
        f"<figure><figcaption>{label} <b data-now={key}></b></figcaption>"
        f"<svg data-spark={key}></svg></figure>"
    )


def _card(card: Card) -> str:
    name = escape(card.name)
    controls = []
    if card.faults:
        controls.append(
            f'<form class=faults data-service="{name}">'
            "<b>Faults</b> "
            f"{_number('error rate', 'error_rate', 1, 0.05)} "
            f"{_number('latency ms', 'latency_ms', 60000, 50)} "
            "<label><input name=hang type=checkbox> hang</label> "
            '<button type=submit data-action="faults">Apply</button> '
            '<button type=button data-action="clear-faults">Clear</button>'
            "<span class=faults-now></span></form>"
        )
    if card.read_only:
        controls.append(
            f'<div class=switch data-service="{name}"><b>Read-only</b> '
            '<button type=button data-action="read-only-on">Hold on</button> '
            '<button type=button data-action="read-only-off">Release</button></div>'
        )
    if card.canary:
        controls.append(
            f'<div class="switch canary-control" data-service="{name}" hidden><b>Canary</b> '
            '<button type=button data-action="rollback">Roll back</button></div>'
        )
    return (
        f'<section class=card id="svc-{name}" data-service="{name}">'
        f"<header><h2>{name}</h2> <span class=health data-field=health>…</span> "
        "<span class=version data-field=version></span></header>"
        "<div class=canary data-field=canary></div>"
        f"<div class=red>{''.join(_spark(label, key) for label, key in RED)}</div>"
        "<div class=facts>"
        "<div><h3>Breakers</h3><table class=breakers data-field=breakers></table></div>"
        "<div><h3>Shedding</h3><table data-field=shed></table></div>"
        "<div><h3>Modes</h3><ul data-field=modes></ul></div>"
        "</div>"
        f"<div class=controls>{''.join(controls)}</div></section>"
    )


def ops_page(operator: str, csrf_token: str, cards: list[Card]) -> str:
    """The page: a card per service, filled and kept current by the script."""
    head = (
        f'<meta name=csrf-token content="{escape(csrf_token)}">'
        '<script src="/ops/static/ops.js" defer></script>'
    )
    body = (
        "<header class=top><h1>Ops</h1>"
        "<span class=status id=stream-status>connecting…</span>"
        f"<span class=who>{escape(operator)} "
        '<form method=post action="/ops/logout" class=logout>'
        f'<input type=hidden name=csrf_token value="{escape(csrf_token)}">'
        "<button type=submit>Log out</button></form></span></header>"
        "<p class=message id=message role=status></p>"
        f"<main class=cards>{''.join(_card(c) for c in cards)}</main>"
        "<section class=traces><h2>Latest traces</h2><ol id=traces></ol>"
        "<p id=last-canary-run></p></section>"
    )
    return _shell("Ops", body, head=head)


def waterfall_page(trace_id: str, text: str) -> str:
    """One trace's waterfall, as `make trace` prints it."""
    return _shell(
        f"Trace {trace_id}",
        f'<main class=waterfall><p><a href="/ops">← ops</a></p><h1>Trace {escape(trace_id)}</h1>'
        f"<pre>{escape(text)}</pre></main>",
    )
