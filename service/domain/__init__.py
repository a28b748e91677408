"""Domain: the pure rules of conversations, grouping and holds, and the arrival clock.

Lives here: statuses and message types, the conversation state machine, the rejections an
event can meet, the reply's content and id, the debounce window and hold window arithmetic.
May import: the standard library only. Never Flask, SQLAlchemy, Redis, RQ or marshmallow,
so every rule here is testable without a service running (tests/unit/test_rules.py).
"""
