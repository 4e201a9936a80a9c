"""The few small HTML pages the reader sees (pure; every value escaped).

Plain functions returning strings rather than a template directory: a few
short pages with no operator customisation needed, and one ``_page`` that
escapes every interpolated value keeps the escaping in one visible place.
"""

from __future__ import annotations

from html import escape

_STYLE = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;padding:2rem 1rem;
color:#1b1b1f;background:#fafafa}
main{max-width:32rem;margin:0 auto;background:#fff;border:1px solid #ddd;border-radius:8px;
padding:1.5rem 2rem}
h1{font-size:1.3rem;margin-top:0}
h1,strong{overflow-wrap:anywhere}
button{font:inherit;padding:.5rem 1.2rem;border-radius:6px;border:1px solid #888;cursor:pointer;
min-height:44px;min-width:44px}
.muted{color:#555;font-size:.9rem}
@media (prefers-color-scheme:dark){body{background:#111;color:#eee}
main{background:#1c1c1f;border-color:#333}.muted{color:#aaa}
button{background:#2a2a2e;color:#eee}}
"""


def _page(title: str, body: str) -> str:
    """Wrap already-escaped ``body``; ``title`` is escaped here."""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>\n"
    )


def confirm_unsubscribe(email: str, list_name: str) -> str:
    """GET /unsubscribe/{token}: nothing changes until the reader presses the button.

    The form posts the RFC 8058 body to the same URL, so the button and a mail
    client's one-click unsubscribe are the same request.
    """
    return _page(
        f"Unsubscribe from {list_name}?",
        f"<p>Stop sending digests to <strong>{escape(email)}</strong>?</p>"
        '<form method="post">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit" id="unsubscribe">Unsubscribe</button></form>'
        '<p class="muted">You can close this page to stay subscribed.</p>',
    )


def unsubscribed(email: str, list_name: str, manage_url: str | None = None) -> str:
    """``manage_url``: the reader's signed manage page, where they can subscribe again."""
    again = (
        f'<p class="muted">Changed your mind? <a id="manage" href="{escape(manage_url)}">'
        "Subscribe again or change your settings</a>.</p>"
        if manage_url
        else '<p class="muted">Changed your mind? Reply to any digest to be subscribed again.</p>'
    )
    return _page(
        "You are unsubscribed",
        f"<p><strong>{escape(email)}</strong> will get no more digests from "
        f"{escape(list_name)}.</p>" + again,
    )


def _paper_name(paper: str, title: str | None) -> str:
    """What the reader knows the paper by: its title; else an arXiv id or DOI, never a
    content hash (``sha:...``) or a bare link id."""
    if title and title.strip():
        return " ".join(title.split())
    if paper.startswith(("sha:", "url:")):
        return "this paper"
    return paper.removeprefix("doi:")


def _digests_of(list_name: str | None) -> str:
    return f"{escape(list_name)} digests" if list_name else "digests"


def confirm_feedback(
    signal: str, paper: str, *, title: str | None = None, list_name: str | None = None
) -> str:
    """GET /feedback/{token}: nothing is recorded until the reader presses the button.

    Link scanners fetch every URL in a message; only the form's POST (to the
    same URL, no body needed: the signed token says what to record) acts.
    The page names the paper by ``title`` (its id when unknown) and the list.
    """
    wording, button = (
        ("more", "More like this") if signal == "more" else ("fewer", "Less like this")
    )
    name = _paper_name(paper, title)
    return _page(
        f"{wording.capitalize()} papers like {name}?",
        f"<p>Show {wording} papers like <strong>{escape(name)}</strong> in your next "
        f"{_digests_of(list_name)}?</p>"
        f'<form method="post"><button type="submit" id="feedback">{button}</button></form>'
        '<p class="muted">You can close this page to change nothing.</p>',
    )


def feedback_recorded(
    signal: str, paper: str, *, title: str | None = None, list_name: str | None = None
) -> str:
    wording = "more" if signal == "more" else "fewer"
    return _page(
        "Thanks, noted",
        f"<p>Your next {_digests_of(list_name)} will show {wording} papers like "
        f"<strong>{escape(_paper_name(paper, title))}</strong>.</p>"
        '<p class="muted">You can close this page.</p>',
    )


def link_inactive() -> str:
    return _page(
        "This subscription is not active",
        "<p>This digest is no longer sent to this address, so the link changed nothing.</p>",
    )


def invalid_link() -> str:
    """The one page for every bad token: it says nothing about why."""
    return _page(
        "This link is not valid",
        "<p>The link may be incomplete, too old, or not meant for this page. "
        "Nothing was changed.</p>"
        '<p class="muted">Use the link in your latest digest, or reply to it for help.</p>',
    )


def unavailable() -> str:
    return _page(
        "Please try again in a minute",
        "<p>The service could not record that just now. Nothing was changed.</p>",
    )


def not_found() -> str:
    return _page("Not found", "<p>There is nothing here.</p>")
