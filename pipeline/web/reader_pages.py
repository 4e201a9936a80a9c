"""The subscribe, confirm and manage pages (pure; every interpolated value escaped).

Built like ``pages.py``: plain functions returning strings through its one ``_page``.
The only script is the time-zone guess (``Intl``), allowed by its hash in the page's CSP
(:data:`SCRIPT_CSP`); without it the field keeps its default and stays editable.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from html import escape
from zoneinfo import available_timezones

from pipeline.web.pages import _page
from pipeline.web.readers import ManagedReader, ReaderForm
from pipeline.web.taxonomy import CATEGORIES, CODES

_GUESS_TZ = (
    "(function(){var f=document.getElementById('timezone');"
    "if(!f||f.getAttribute('data-guess')!=='1')return;"
    "try{var z=Intl.DateTimeFormat().resolvedOptions().timeZone;if(z)f.value=z;}catch(e){}})();"
)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_GUESS_TZ.encode()).digest()).decode()
SCRIPT_CSP = (
    f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{_SCRIPT_HASH}'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
FREQUENCIES = (
    ("daily", "Every day"),
    ("weekdays", "Monday to Friday"),
    ("weekly:mon", "Weekly, on Monday"),
    ("weekly:fri", "Weekly, on Friday"),
    ("weekly:sun", "Weekly, on Sunday"),
)
_FORM_STYLE = (
    "<style>label{display:block;margin:.8rem 0 .2rem;font-weight:600}"
    "input[type=text],input[type=email],input[type=time],input[type=number],textarea,select"
    "{font:inherit;width:100%;box-sizing:border-box;padding:.35rem}"
    "fieldset{border:1px solid #ccc;border-radius:6px;max-height:14rem;overflow:auto}"
    "fieldset label{display:inline;font-weight:400;margin:0}"
    ".cat{display:block}.trap{position:absolute;left:-10000px;height:0;overflow:hidden}"
    ".problems{color:#a00}.section{margin-top:1.5rem;border-top:1px solid #ddd}"
    "</style>"
)


@lru_cache(maxsize=1)
def _zone_options() -> str:
    return "".join(f'<option value="{escape(z)}">' for z in sorted(available_timezones()))


def _problems(problems: Sequence[str]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{escape(p)}</li>" for p in problems)
    return f'<ul class="problems" id="problems">{items}</ul>'


def _checked(on: bool) -> str:
    return " checked" if on else ""


def _preferences(
    form: ReaderForm, overridden: Iterable[str] = (), *, guess_tz: bool = False
) -> str:
    """The interests and schedule fields, prefilled with ``form`` (escaped). ``guess_tz``:
    the page's script puts the browser's time zone in the field (the subscribe page)."""
    marked = set(overridden)

    def note(field: str) -> str:
        return " <small>(your change)</small>" if field in marked else ""

    guess = "1" if guess_tz else "0"
    chosen = set(form.categories)
    boxes = "".join(
        f'<span class="cat"><input type="checkbox" name="categories" id="cat-{escape(code)}" '
        f'value="{escape(code)}"{_checked(code in chosen)}> '
        f'<label for="cat-{escape(code)}">{escape(code)}{": " if name else ""}{escape(name)}'
        "</label></span>"
        for code, name in CATEGORIES + tuple((c, "") for c in form.categories if c not in CODES)
    )
    frequencies = "".join(
        f'<option value="{escape(value)}"{" selected" if value == form.frequency else ""}>'
        f"{escape(label)}</option>"
        for value, label in FREQUENCIES
    )
    if form.frequency not in {v for v, _ in FREQUENCIES}:  # the operator set another one
        frequencies += (
            f'<option value="{escape(form.frequency)}" selected>{escape(form.frequency)}</option>'
        )
    return (
        f"<label>arXiv categories{note('categories')}</label><fieldset>{boxes}</fieldset>"
        f'<label for="about">What are you interested in?{note("about")}</label>'
        '<textarea id="about" name="about" rows="3" maxlength="2000">'
        f"{escape(form.about)}</textarea>"
        f'<label for="query">Search query (optional){note("query")}</label>'
        f'<input type="text" id="query" name="query" maxlength="500" value="{escape(form.query)}">'
        f'<label for="authors">Authors to follow, one per line{note("authors")}</label>'
        '<textarea id="authors" name="authors" rows="2" maxlength="2000">'
        f"{escape(form.authors)}</textarea>"
        f'<p><input type="checkbox" id="trending_only" name="trending_only" value="1"'
        f'{_checked(form.trending_only)}> <label for="trending_only" style="display:inline">'
        f"Only the trending papers{note('trending')}</label></p>"
        f'<label for="frequency">How often{note("frequency")}</label>'
        f'<select id="frequency" name="frequency">{frequencies}</select>'
        f'<label for="send_at">At (your local time){note("send_at")}</label>'
        f'<input type="time" id="send_at" name="send_at" value="{escape(form.send_at)}">'
        f'<label for="timezone">Time zone{note("timezone")}</label>'
        f'<input type="text" id="timezone" name="timezone" list="zones" maxlength="64" '
        f'value="{escape(form.timezone)}" data-guess="{guess}">'
        f'<datalist id="zones">{_zone_options()}</datalist>'
    )  # fmt: skip


def subscribe_form(
    list_name: str, form: ReaderForm, email: str = "", problems: Sequence[str] = ()
) -> str:
    """GET /subscribe (and the form again, with its problems, after a bad POST)."""
    return _page(
        f"Subscribe to {list_name}",
        _FORM_STYLE
        + "<p>Get new papers that match your interests by email. We send one message to "
        "confirm the address; nothing arrives until you press its button.</p>"
        + _problems(problems)
        + '<form method="post" id="subscribe-form">'
        '<label for="email">Email address</label>'
        '<input type="email" id="email" name="email" required maxlength="320" '
        f'value="{escape(email)}">'
        '<div class="trap" aria-hidden="true"><label for="website">Leave this empty</label>'
        '<input type="text" id="website" name="website" tabindex="-1" autocomplete="off"></div>'
        + _preferences(form, guess_tz=not problems)
        + '<p><button type="submit" id="subscribe">Subscribe</button></p></form>'
        f"<script>{_GUESS_TZ}</script>",
    )  # fmt: skip


def check_your_inbox() -> str:
    """The one answer to every accepted POST /subscribe, known address or not."""
    return _page(
        "Check your inbox",
        "<p>If the address can receive our digests, a message with a confirmation link is "
        "on its way. The subscription starts when you press the button on that link's page.</p>"
        '<p class="muted">No message? Check the spam folder, or try again in an hour.</p>',
    )


def subscribe_closed() -> str:
    return _page("Subscriptions are closed", "<p>This list takes no sign-ups on the web.</p>")


def slow_down() -> str:
    return _page(
        "Too many attempts",
        "<p>Too many sign-ups came from here or for this address. Please try again later.</p>",
    )


def confirm_signup(email: str, list_name: str) -> str:
    """GET /confirm/{token}: link scanners fetch it; only the button confirms."""
    return _page(
        f"Confirm your subscription to {list_name}",
        f"<p>Start sending digests to <strong>{escape(email)}</strong>?</p>"
        '<form method="post"><button type="submit" id="confirm">Confirm subscription</button>'
        "</form>"
        '<p class="muted">If you did not ask for this, close the page; nothing will be sent.</p>',
    )


def confirmed(email: str, list_name: str, manage_url: str) -> str:
    return _page(
        "You are subscribed",
        f"<p><strong>{escape(email)}</strong> will receive {escape(list_name)}.</p>"
        f'<p><a id="manage" href="{escape(manage_url)}">Manage your subscription</a>; every '
        "digest links there too.</p>",
    )


def manage(
    reader: ManagedReader, list_name: str, *, problems: Sequence[str] = (), notice: str = ""
) -> str:
    """GET /manage/{token}: the reader's settings; every change is a POST form here."""
    parts = [_FORM_STYLE, _problems(problems)]
    if notice:
        parts.append(f'<p id="notice"><strong>{escape(notice)}</strong></p>')
    parts.append(f"<p>Settings of <strong>{escape(reader.email)}</strong>.</p>")
    if reader.can_resubscribe or reader.status == "unsubscribed":
        if reader.can_resubscribe:
            parts.append(
                "<p>You are unsubscribed: no digests are sent.</p>"
                '<form method="post"><input type="hidden" name="action" value="resubscribe">'
                '<button type="submit" id="resubscribe">Subscribe again</button></form>'
            )
        else:
            parts.append("<p>You are unsubscribed, and this address cannot be mailed again.</p>")
    elif reader.status != "active":
        parts.append("<p>No digests are sent to this address.</p>")
    if reader.origin == "config":
        parts.append(
            '<p class="muted" id="operator-note">The list operator set up this subscription. '
            "Changes you save here are kept as your own and win over the operator's settings "
            "for the fields you change, until you reset them.</p>"
        )
    parts.append(
        '<form method="post" id="preferences"><input type="hidden" name="action" value="save">'
        + _preferences(reader.form, reader.overridden)
        + '<p><button type="submit" id="save">Save</button></p></form>'
    )
    if reader.overridden:
        parts.append(
            '<form method="post"><input type="hidden" name="action" value="reset">'
            '<button type="submit" id="reset">Use the operator\'s settings again</button></form>'
        )
    parts.append('<div class="section"><h2>Pause</h2>')
    if reader.paused_until is not None:
        parts.append(
            f'<p id="paused">Paused until {escape(_day(reader.paused_until))}.</p>'
            '<form method="post"><input type="hidden" name="action" value="resume">'
            '<button type="submit" id="resume">Resume now</button></form>'
        )
    parts.append(
        '<form method="post"><input type="hidden" name="action" value="pause">'
        '<label for="weeks">Pause for how many weeks?</label>'
        '<input type="number" id="weeks" name="weeks" min="1" max="52" value="2">'
        '<p><button type="submit" id="pause">Pause</button></p></form></div>'
    )
    parts.append('<div class="section"><h2>Your "more / less like this"</h2>')
    if reader.presses:
        rows = "".join(
            '<li><form method="post"><input type="hidden" name="action" value="undo">'
            f'<input type="hidden" name="paper" value="{escape(p.paper_id)}">'
            f"{'More' if p.signal == 'more' else 'Less'} like "
            f"<strong>{escape(p.title or p.paper_id)}</strong> ({escape(p.paper_id)}) "
            '<button type="submit" class="undo">Undo</button></form></li>'
            for p in reader.presses
        )
        parts.append(f'<ul id="presses">{rows}</ul>')
    else:
        parts.append("<p>None yet.</p>")
    parts.append(
        '</div><div class="section"><h2>Your data</h2>'
        '<form method="post"><input type="hidden" name="action" value="export">'
        '<button type="submit" id="export">'
        "Download my data (JSON)</button></form>"
        '<form method="post"><input type="hidden" name="action" value="erase">'
        '<p><input type="checkbox" id="erase-sure" name="sure" value="1" required> '
        '<label for="erase-sure" style="display:inline">Delete everything about me; keep only '
        "a one-way hash of my address so that it is never mailed again.</label></p>"
        '<button type="submit" id="erase">Delete my data</button></form></div>'
    )
    return _page(f"Your {list_name} subscription", "".join(parts))


def erased() -> str:
    return _page(
        "Your data is deleted",
        "<p>Everything about this address is gone. Only a one-way hash of it is kept, so that "
        "it is never mailed again.</p>",
    )


def _day(value: datetime) -> str:
    return value.strftime("%A %d %B %Y")
