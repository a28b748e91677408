"""Infrastructure: how the pipeline's state is stored, timed and announced.

Lives here: the database models and SQL statements (compiled once per dialect), the
PostgreSQL/SQLite differences behind one interface (`database`), the Redis reply buffer, RQ
queueing and scheduling, live notices on pub/sub, and the metrics counters.
May import: `service.domain`, `service.extensions`, `service.config` and libraries. Never
`service.pipeline`, `service.api`, `service.jobs` or `service.cli` (tests/unit/test_layers.py).
"""
