"""Pipeline: the use cases, one transaction each, split by what triggers them.

- `intake`: a NEW_MESSAGE (accept it into its group, or hold it);
- `lifecycle`: NEW_CONVERSATION and CLOSE_CONVERSATION;
- `replies`: flush_group (answer a quiet group), flush_groups (a scheduler poll's batch of
  them, in one transaction) and reconcile_groups (rebuild the buffer);
- `holds`: messages that came before their conversation (hold, join, expire, prune);
- `groups`: what every trigger shares: buffering arrivals and arming the group's flush;
- `queries`: reads for the API, the CLI and the operators' endpoints.

Order of writes for an accepted message: the database row is written (not committed), then
the Redis buffer, then the commit. A Redis failure therefore rolls the row back (503, nothing
changed); a failed commit takes the buffer entry back. The database is the record of which
messages were answered; the buffer only times the groups and can be rebuilt from it.

May import: `service.domain`, `service.infra`, `service.extensions`, `service.config` and
Flask's `current_app` for settings. Never `service.api` (no request, no HTTP errors),
`service.jobs` or `service.cli` (tests/unit/test_layers.py).
"""
