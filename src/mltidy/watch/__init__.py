"""``watch``: poll the stores, turn what changed into events, notify each event once.

``poll`` runs one poll over one store session; ``state`` is the SQLite file that remembers what
was seen and sent between polls.
"""
