"""BASELINE for bench/e2e.py -- a plain stack, NOT Paperpost: the same job done simply.

Each of ``--procs`` processes (fork) takes every K-th reader of the JSON Lines file and:
fetches the day's arXiv RSS and Hugging Face JSON over HTTP (urllib), parses them
(ElementTree, json; ``replace`` announcements skipped, HF upvotes merged), builds an
inverted index (title + abstract words, categories, authors), scores each reader's query
words (field prefixes and AND/OR dropped, ANDNOT words excluded, ``word*`` expanded),
categories (``cs.*`` too), authors, about text and liked papers' titles (from
``--history``) by idf, keeps the top 15 plus the ``trending`` most upvoted, renders one
Jinja2 template, builds an ``email.message.EmailMessage`` (text + HTML) and sends it
through aiosmtplib over 4 reused connections. No database, no outbox, no retries, one
signed (HMAC) unsubscribe link per digest. Prints one JSON line: sent, message KB.

Usage: python bench/plain_stack.py READERS.jsonl RSS_URL HF_URL SMTP_PORT [--procs K]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import heapq
import hmac
import json
import math
import multiprocessing
import re
import urllib.request
import xml.etree.ElementTree as ET
from collections import defaultdict
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib
from jinja2 import Environment

WORD = re.compile(r"[a-z][a-z0-9-]+\*?")
SYNTAX = {"and", "or", "not", "andnot", "ti", "abs", "au", "cat", "all"}
DC = "{http://purl.org/dc/elements/1.1/}"
ARXIV = "{http://arxiv.org/schemas/atom}"
TEMPLATE = Environment(autoescape=True).from_string(
    """<!doctype html><html><body style="font-family:sans-serif;max-width:40em">
<h1>Your papers, {{ day }}</h1><p>Hello {{ name }}, {{ papers|length }} new papers for you.</p>
{% for p in papers %}<div style="margin:1em 0"><h3><a href="https://arxiv.org/abs/{{ p.id }}">
{{ p.title }}</a></h3><p style="color:#555">{{ p.authors|join(", ") }} · {{ p.cats|join(" ") }}
{% if p.upvotes %} · ▲ {{ p.upvotes }}{% endif %}</p><p>{{ p.abstract|truncate(400) }}</p>
<p><a href="https://arxiv.org/pdf/{{ p.id }}">PDF</a> · {{ why[p.id] }}</p></div>{% endfor %}
<p><a href="{{ unsubscribe }}">Unsubscribe</a></p></body></html>"""
)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return bytes(response.read())


def load_papers(rss_url: str, hf_url: str) -> list[dict]:
    papers: dict[str, dict] = {}
    for item in ET.fromstring(fetch(rss_url)).iter("item"):
        if (item.findtext(f"{ARXIV}announce_type") or "").startswith("replace"):
            continue  # a new version of an old paper: not news
        pid = (item.findtext("guid") or "").rsplit(":", 1)[-1].split("v")[0]
        papers[pid] = {
            "id": pid,
            "title": item.findtext("title") or "",
            "abstract": (item.findtext("description") or "").split("Abstract:", 1)[-1].strip(),
            "cats": [c.text or "" for c in item.iter("category")],
            "authors": [a.strip() for a in (item.findtext(f"{DC}creator") or "").split(",")],
            "upvotes": 0,
        }
    for entry in json.loads(fetch(hf_url)):
        p = entry["paper"]
        known = papers.setdefault(
            p["id"],
            {"id": p["id"], "title": p["title"], "abstract": p["summary"], "cats": [],
             "authors": [a["name"] for a in p["authors"]], "upvotes": 0},
        )  # fmt: skip
        known["upvotes"] = p.get("upvotes") or 0
    return list(papers.values())


def terms(text: str) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if w not in SYNTAX and len(w) > 2]


def part(args: argparse.Namespace, k: int) -> tuple[int, int]:
    """Process k's share: (digests sent, message bytes)."""
    papers = load_papers(args.rss, args.hf)
    index, cats, authors = defaultdict(set), defaultdict(set), defaultdict(set)
    for i, p in enumerate(papers):
        for w in set(terms(f"{p['title']} {p['abstract']}")):
            index[w].add(i)
        for c in p["cats"]:
            cats[c].add(i)
        for a in p["authors"]:
            authors[a.lower()].add(i)
    idf = {w: math.log(len(papers) / len(s)) for w, s in index.items()}
    trending = sorted(range(len(papers)), key=lambda i: -papers[i]["upvotes"])
    history = {}
    if args.history:
        with open(args.history, encoding="utf-8") as fh:
            history = {h["id"]: h["title"] for h in map(json.loads, fh)}
    with open(args.readers, encoding="utf-8") as fh:
        readers = [json.loads(line) for n, line in enumerate(fh) if n % args.procs == k]

    def expand(word: str) -> list[str]:
        return [w for w in index if w.startswith(word[:-1])] if word.endswith("*") else [word]

    def digest(reader: dict) -> tuple[list[int], dict[int, str]]:
        interests = reader.get("interests", {})
        scores: dict[int, float] = defaultdict(float)
        why: dict[int, str] = {}
        query = interests.get("query") or ""
        wanted, _, unwanted = query.partition("ANDNOT")
        weighted = [(w, 1.0) for w in terms(wanted)]
        weighted += [
            (w, 0.5)
            for w in sorted(terms(interests.get("about") or ""), key=lambda w: -idf.get(w, 0))[:8]
        ]
        for liked in interests.get("like", []):
            weighted += [(w, 0.3) for w in terms(history.get(liked, ""))]
        for word, weight in weighted:
            for w in expand(word):
                for i in index.get(w, ()):
                    scores[i] += weight * idf[w]
                    why.setdefault(i, f"matched {w}")
        for c in interests.get("categories", []):
            for key in [n for n in cats if n.startswith(c[:-1])] if c.endswith("*") else [c]:
                for i in cats.get(key, ()):
                    scores[i] += 1.0
                    why.setdefault(i, f"in {key}")
        for a in interests.get("authors", []):
            for i in authors.get(a.lower(), ()):
                scores[i] += 3.0
                why[i] = f"by {a}"
        for w in terms(unwanted) + terms(interests.get("exclude") or ""):
            for i in index.get(w, ()):
                scores.pop(i, None)
        top = heapq.nlargest(reader.get("max_items", 15), scores, key=scores.__getitem__)
        extra = [i for i in trending[: reader.get("trending", 0)] if i not in top]
        why.update({i: f"trending ▲ {papers[i]['upvotes']}" for i in extra})
        return top + extra, why

    def message(reader: dict, chosen: list[int], why: dict[int, str]) -> bytes:
        email = reader["email"]
        token = hmac.new(b"bench-secret", email.encode(), hashlib.sha256).hexdigest()[:32]
        unsubscribe = f"https://digest.lab.example/u/{email}/{token}"
        shown = [papers[i] for i in chosen]
        reasons = {papers[i]["id"]: why.get(i, "") for i in chosen}
        html = TEMPLATE.render(day="25 November 2025", name=reader.get("name") or email,
                               papers=shown, why=reasons, unsubscribe=unsubscribe)  # fmt: skip
        msg = EmailMessage()
        msg["From"], msg["To"] = (
            "Paperpost <digest@lab.example>",
            f"{reader.get('name', '')} <{email}>",
        )
        msg["Subject"] = f"{len(shown)} new papers: {shown[0]['title'][:60]}"
        msg["Date"], msg["Message-ID"] = formatdate(), f"<{token}@lab.example>"
        msg["List-Unsubscribe"] = f"<{unsubscribe}>"
        msg.set_content(
            "\n\n".join(f"{p['title']}\nhttps://arxiv.org/abs/{p['id']}" for p in shown)
        )
        msg.add_alternative(html, subtype="html")
        return msg.as_bytes()

    async def send_all() -> tuple[int, int]:
        queue: asyncio.Queue = asyncio.Queue(maxsize=16)
        sent, size = 0, 0

        async def sender() -> None:
            nonlocal sent
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=args.port, start_tls=False)
            await smtp.connect()
            while (job := await queue.get()) is not None:
                await smtp.sendmail("digest@lab.example", [job[0]], job[1])
                sent += 1
            await smtp.quit()

        senders = [asyncio.create_task(sender()) for _ in range(4)]
        for reader in readers:
            chosen, why = digest(reader)
            if chosen:  # nothing matched: no digest, as Paperpost's on_empty = "skip"
                data = message(reader, chosen, why)
                size += len(data)
                await queue.put((reader["email"], data))
        for _ in senders:
            await queue.put(None)
        await asyncio.gather(*senders)
        return sent, size

    return asyncio.run(send_all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("readers")
    parser.add_argument("rss")
    parser.add_argument("hf")
    parser.add_argument("port", type=int)
    parser.add_argument("--history", help="JSON Lines of earlier papers (id, title): liked ones")
    parser.add_argument("--procs", type=int, default=1)
    args = parser.parse_args()
    with multiprocessing.get_context("fork").Pool(args.procs) as pool:
        results = pool.starmap(part, [(args, k) for k in range(args.procs)])
    sent = sum(r[0] for r in results)
    print(
        json.dumps({"sent": sent, "message_kb": sum(r[1] for r in results) / max(sent, 1) / 1000})
    )


if __name__ == "__main__":
    main()
