"""Bounces, complaints and mailed unsubscribes, read back into the suppression list.

Each digest leaves with a return path of its own (VERP, :mod:`pipeline.bounces.verp`);
the reports that come back land in a mailbox (a Maildir or an IMAP folder,
:mod:`pipeline.bounces.mailbox`), are parsed (:mod:`pipeline.bounces.parse`) and recorded
(:mod:`pipeline.bounces.process`, over ``pipeline.store.suppression``). docs/bounces.md
tells the operator's side.
"""
