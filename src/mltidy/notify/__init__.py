"""Telling people: events (what happened), messages (events grouped), delivery (apprise).

``events`` holds the value types, ``store_events`` turns what a poll saw into events,
``messages`` groups events into one notification, ``delivery`` sends it through apprise, and
``optuna`` is the in-process ``notify_when_done(study)`` for ``study.optimize``.
"""
