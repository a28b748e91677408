"""The pipeline's fixed SQL statements, compiled once per dialect instead of once per call.

A Session executing a `text()` construct spends more CPU than the database does on a short
statement: cache-key generation, compilation lookup and the Session's own bookkeeping. A
`Statement` is compiled by SQLAlchemy once per dialect; each call converts its parameters
with the bind processors of their declared types (so UUIDs and UTC datetimes are stored the
same as through the ORM) and hands the dialect's SQL to `Connection.exec_driver_sql`. The
Connection still brings SQLAlchemy's events (SQLite's BEGIN IMMEDIATE), error wrapping (a
lost database is a 503) and pool handling. The message hot path on PostgreSQL goes one step
further down (`Statement.first_row`, `run_on_driver`): the DBAPI cursor itself, with the
same error handling done here.

On PostgreSQL a named `Statement` is also a server-side prepared statement: PostgreSQL parses
and plans it once per connection instead of once per call, which on the message INSERT is
about a third of the database's CPU. docs/benchmarks.md has the figures.
"""

from sqlalchemy import Boolean, Integer, String, Text, Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError

from service.domain import generation
from service.domain.delivery import PENDING
from service.domain.rules import INBOUND, OPEN, OUTBOUND
from service.infra.models import UTCDateTime

POSTGRESQL = "postgresql"
# Execution option of an engine whose connections may hold server-side prepared statements.
PREPARE_OPTION = "prepare_statements"
DUPLICATE_PREPARED_STATEMENT = "42P05"


class Statement:
    """One SQL statement with typed named parameters (`:name`), for any dialect.

    `lock` is a row-lock clause appended on PostgreSQL only: SQLite has no row locks, and
    its transactions are serialised whole instead (BEGIN IMMEDIATE, service.infra.database).
    `name`, when given, makes it a prepared statement on PostgreSQL connections whose engine
    allows it (execution option `PREPARE_OPTION`): PREPARE once on each database connection,
    on its first use there, then EXECUTE.
    """

    def __init__(self, sql, lock=None, name=None, **types):
        self.sql = sql
        self.lock = lock
        self.name = name
        self.binds = [bindparam(key, type_=type_) for key, type_ in types.items()]
        self._prepared = {}

    def _prepare(self, dialect):
        cache_key = (dialect.name, dialect.driver)
        if cache_key not in self._prepared:
            postgresql = dialect.name == POSTGRESQL
            sql = f"{self.sql} {self.lock}" if self.lock and postgresql else self.sql
            compiled = text(sql).bindparams(*self.binds).compile(dialect=dialect)
            converters = {}
            for key, bind in compiled.binds.items():
                process = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if process is not None:
                    converters[key] = process
            order = tuple(compiled.positiontup) if compiled.positional else None
            server_side = None
            if self.name and postgresql and dialect.paramstyle == "pyformat":
                server_side = self._server_side(compiled.string, dialect)
            self._prepared[cache_key] = (compiled.string, converters, order, server_side)
        return self._prepared[cache_key]

    def _server_side(self, compiled_sql, dialect):
        """(PREPARE statement, EXECUTE call) for a statement compiled with `%(name)s` marks."""
        # `%%` stays: psycopg2 reads the PREPARE through its %-formatting too.
        body = compiled_sql
        for number, bind in enumerate(self.binds, start=1):
            body = body.replace(f"%({bind.key})s", f"${number}")
        types = ", ".join(dialect.type_compiler_instance.process(b.type) for b in self.binds)
        call = ", ".join(f"%({bind.key})s" for bind in self.binds)
        return f"PREPARE {self.name} ({types}) AS {body}", f"EXECUTE {self.name} ({call})"

    def execute(self, connection, begin=False, prelude=None, **params):
        """Run on a SQLAlchemy Connection (a Session's: `db.session.connection()`).

        `begin` sends BEGIN in the same round trip, on an autocommit connection whose
        transactions the caller manages itself; `prelude`, a fixed statement (no parameters,
        no `%`), is sent before this one in the same round trip too (PostgreSQL).
        """
        if prelude and ("%" in prelude or connection.dialect.name != POSTGRESQL):
            raise ValueError("a prelude is a fixed PostgreSQL statement without '%'")
        sql, params = self._bind(connection, begin, params, prelude)
        return connection.exec_driver_sql(sql, params)

    def first_row(self, connection, begin=False, **params):
        """`execute(...).first()` on the connection's DBAPI cursor (`run_on_driver`): a
        tuple, or None when no row came back. For the message hot path on PostgreSQL."""
        sql, params = self._bind(connection, begin, params)
        cursor = run_on_driver(connection, sql, params)
        try:
            return cursor.fetchone()
        finally:
            cursor.close()

    def _bind(self, connection, begin, params, prelude=None):
        """The SQL to send and its converted parameters, after a PREPARE if one is due."""
        sql, converters, order, server_side = self._prepare(connection.dialect)
        if server_side is not None and connection.get_execution_options().get(PREPARE_OPTION):
            prepare, sql = server_side
            # Kept with the DBAPI connection, which outlives this checkout from the pool.
            prepared = connection.connection.info.setdefault("prepared_statements", set())
            if self.name not in prepared:
                try:
                    connection.exec_driver_sql(prepare)
                except DBAPIError as exc:
                    # Prepared already by an earlier use whose bookkeeping was cut short.
                    if getattr(exc.orig, "pgcode", None) != DUPLICATE_PREPARED_STATEMENT:
                        raise
                prepared.add(self.name)
        for key, process in converters.items():
            params[key] = process(params[key])
        if prelude:
            sql = f"{prelude}; {sql}"
        if begin:
            sql = f"BEGIN; {sql}"
        if order is not None:
            return sql, tuple(params[key] for key in order)
        return sql, params


def run_on_driver(connection, sql, params=None):
    """Run `sql` on the DBAPI cursor of SQLAlchemy Connection `connection`; returns the cursor
    (the caller fetches and closes it).

    SQLAlchemy's execution context and result objects cost about 30 µs of CPU a statement
    here, a tenth of a message's path through the web (docs/benchmarks.md, "Ingest"), so the
    hot path skips them. What it must keep is done the way Connection does it
    (`Connection._handle_dbapi_exception`): a driver error is raised as SQLAlchemy's
    DBAPIError subclass of the same name (OperationalError is a 503 in the API); a disconnect
    invalidates the connection and has the pool recycle every connection older than it at its
    next checkout (they went down with it); an interrupt (a BaseException that is not an
    Exception) discards the connection, which it left in the middle of the protocol.
    """
    proxied = connection.connection
    cursor = proxied.cursor()
    try:
        cursor.execute(sql, params)
    except BaseException as exc:
        dialect = connection.dialect
        dbapi_error = isinstance(exc, dialect.loaded_dbapi.Error)
        # As Connection._handle_dbapi_exception: an interrupt (not an Exception) leaves the
        # connection mid-protocol, so it is discarded, without invalidating the pool.
        interrupted = not isinstance(exc, Exception)
        disconnect = interrupted or (dbapi_error and dialect.is_disconnect(exc, proxied, cursor))
        try:
            cursor.close()
        except Exception:
            pass
        if disconnect:
            if not interrupted:
                # What Connection itself calls (private, unchanged since SQLAlchemy 1.4):
                # connections older than this one are recycled at their next checkout, and
                # a second error of the same outage (an older connection) changes nothing.
                # Replacing the pool instead left the old one's healthy connections open
                # and dropped the ones opened since (docs/decisions.md).
                connection.engine.pool._invalidate(proxied, exc, _checkin=False)
            connection.invalidate(exc)
        if not dbapi_error:
            raise
        raise DBAPIError.instance(
            sql,
            params,
            exc,
            dialect.loaded_dbapi.Error,
            hide_parameters=connection.engine.hide_parameters,
            connection_invalidated=disconnect,
            dialect=dialect,
        ) from exc
    return cursor


# Statements of the hot paths: they run on every message and every flush, and SQLAlchemy's
# per-call expression work costs more CPU than the database spends on them
# (docs/benchmarks.md).
MESSAGE_COLUMNS = "id, conversation_id, type, content, timestamp, received_at, generated"
MESSAGE_TYPES = {
    "id": Uuid,
    "conversation_id": Uuid,
    "type": String,
    "content": Text,
    "timestamp": UTCDateTime,
    "received_at": UTCDateTime,
    "generated": Boolean,
}
INSERT_MESSAGE = (
    f"INSERT INTO messages ({MESSAGE_COLUMNS})"
    " VALUES (:id, :conversation_id, :type, :content, :timestamp, :received_at, :generated)"
)
# A reply runs under the conversation's row lock, so its id cannot already exist.
STORE_REPLY = Statement(INSERT_MESSAGE, **MESSAGE_TYPES)
# PostgreSQL: a message is checked and stored by one prepared statement.
# The share lock on the conversation makes a concurrent close (or flush) wait for this
# message's commit, so the close answers it instead of leaving it alone. The INSERT happens
# only into an open conversation and for an id never held; a duplicate id stores nothing
# (ON CONFLICT), so the count of stored rows tells it apart without an exception.
ACCEPT_MESSAGE = Statement(
    "WITH conversation AS ("
    "  SELECT status FROM conversations WHERE id = :conversation_id FOR SHARE"
    "), held AS ("
    "  SELECT status FROM held_messages WHERE id = :id"
    "), stored AS ("
    f"  INSERT INTO messages ({MESSAGE_COLUMNS})"
    "   SELECT :id, :conversation_id, :type, :content, :timestamp, :received_at, :generated"
    f"  FROM conversation WHERE status = '{OPEN}' AND NOT EXISTS (SELECT 1 FROM held)"
    "   ON CONFLICT (id) DO NOTHING RETURNING 1"
    ")"
    " SELECT conversation.status, (SELECT status FROM held), (SELECT count(*) FROM stored)"
    " FROM conversation",
    name="accept_message",
    **MESSAGE_TYPES,
)
# SQLite has no INSERT inside WITH: the same check, then the INSERT, in one transaction
# (serialised whole by BEGIN IMMEDIATE, so nothing slips in between).
ACCEPT_CHECK = Statement(
    "SELECT c.status, (SELECT h.status FROM held_messages h WHERE h.id = :message_id)"
    " FROM conversations c WHERE c.id = :conversation_id",
    message_id=Uuid,
    conversation_id=Uuid,
)
STORE_MESSAGE = Statement(INSERT_MESSAGE + " ON CONFLICT (id) DO NOTHING", **MESSAGE_TYPES)
LOCK_CONVERSATION = Statement(
    "SELECT status FROM conversations WHERE id = :conversation_id",
    lock="FOR UPDATE",
    conversation_id=Uuid,
)
SELECT_UNANSWERED = (
    text(
        f"SELECT id, received_at FROM messages WHERE conversation_id = :conversation_id"
        f" AND type = '{INBOUND}' AND reply_id IS NULL ORDER BY received_at, id"
    )
    .bindparams(bindparam("conversation_id", type_=Uuid))
    .columns(id=Uuid, received_at=UTCDateTime)
)
LINK_REPLY = text("UPDATE messages SET reply_id = :reply WHERE id IN :ids").bindparams(
    bindparam("reply", type_=Uuid), bindparam("ids", expanding=True, type_=Uuid)
)
TOUCH_CONVERSATION = text(
    "UPDATE conversations SET updated_at = :at WHERE id = :conversation_id"
).bindparams(bindparam("at", type_=UTCDateTime), bindparam("conversation_id", type_=Uuid))
# The outbox row of a reply, in the reply's transaction (service.pipeline.replies): due at
# once, its retry window starting with the reply.
STORE_DELIVERY = Statement(
    "INSERT INTO deliveries (reply_id, conversation_id, status, attempts, created_at,"
    " retry_from, next_attempt_at)"
    f" VALUES (:reply_id, :conversation_id, '{PENDING}', 0, :created_at, :created_at,"
    " :created_at)",
    reply_id=Uuid,
    conversation_id=Uuid,
    created_at=UTCDateTime,
)
# A group closed for the generator (service.pipeline.replies): pending and due at once.
STORE_GENERATION = Statement(
    "INSERT INTO generations (reply_id, conversation_id, status, attempts, created_at,"
    " next_attempt_at)"
    f" VALUES (:reply_id, :conversation_id, '{generation.PENDING}', 0, :created_at, :created_at)",
    reply_id=Uuid,
    conversation_id=Uuid,
    created_at=UTCDateTime,
)
# The replies of many groups, of many conversations, written by one statement each
# (service.pipeline.replies): PostgreSQL only (arrays, unnest). The parameters are parallel
# lists, one item per row; the SQL is the same whatever their length, so it is compiled once.
# Locked in id order, so two transactions locking overlapping sets never deadlock (PostgreSQL
# locks the rows in the order the sort hands them up).
LOCK_CONVERSATIONS = Statement(
    "SELECT id, status FROM conversations WHERE id = ANY(:ids) ORDER BY id FOR UPDATE",
    ids=ARRAY(Uuid),
)
SELECT_UNANSWERED_OF = Statement(
    "SELECT conversation_id, id, received_at FROM messages"
    f" WHERE conversation_id = ANY(:conversation_ids) AND type = '{INBOUND}'"
    " AND reply_id IS NULL ORDER BY conversation_id, received_at, id",
    conversation_ids=ARRAY(Uuid),
)
STORE_REPLIES = Statement(
    f"INSERT INTO messages ({MESSAGE_COLUMNS})"
    f" SELECT u.id, u.conversation_id, '{OUTBOUND}', u.content, u.at, u.at, true"
    " FROM unnest(:ids, :conversation_ids, :contents, :moments)"
    " AS u(id, conversation_id, content, at)",
    ids=ARRAY(Uuid),
    conversation_ids=ARRAY(Uuid),
    contents=ARRAY(Text),
    moments=ARRAY(UTCDateTime),
)
LINK_REPLIES = Statement(
    "UPDATE messages m SET reply_id = u.reply FROM unnest(:ids, :replies) AS u(id, reply)"
    " WHERE m.id = u.id",
    ids=ARRAY(Uuid),
    replies=ARRAY(Uuid),
)
TOUCH_CONVERSATIONS = Statement(
    "UPDATE conversations c SET updated_at = u.at FROM unnest(:ids, :moments) AS u(id, at)"
    " WHERE c.id = u.id",
    ids=ARRAY(Uuid),
    moments=ARRAY(UTCDateTime),
)


def _one_row_per_reply(table, columns, values):
    """An INSERT into `table` of one row per reply, from the parallel lists `reply_ids`,
    `conversation_ids` and `moments` (`u.at` in `values`)."""
    return Statement(
        f"INSERT INTO {table} (reply_id, conversation_id, {columns})"
        f" SELECT u.reply_id, u.conversation_id, {values}"
        " FROM unnest(:reply_ids, :conversation_ids, :moments) AS u(reply_id, conversation_id, at)",
        reply_ids=ARRAY(Uuid),
        conversation_ids=ARRAY(Uuid),
        moments=ARRAY(UTCDateTime),
    )


STORE_DELIVERIES = _one_row_per_reply(
    "deliveries",
    "status, attempts, created_at, retry_from, next_attempt_at",
    f"'{PENDING}', 0, u.at, u.at, u.at",
)
STORE_GENERATIONS = _one_row_per_reply(
    "generations",
    "status, attempts, created_at, next_attempt_at",
    f"'{generation.PENDING}', 0, u.at, u.at",
)
# A delivery attempt's result (service.pipeline.deliveries), fenced on the claim: only while
# the row is still pending with the attempt number the pass claimed. Runs once per attempt, and
# the ORM's update() spent more CPU building it than PostgreSQL spent running it.
SETTLE_DELIVERY = Statement(
    "UPDATE deliveries SET status = :status, leased_until = NULL, last_status = :last_status,"
    " last_error = :last_error, next_attempt_at = :next_attempt_at,"
    " delivered_at = :delivered_at"
    f" WHERE reply_id = :reply_id AND attempts = :attempts AND status = '{PENDING}'",
    status=String,
    last_status=Integer,
    last_error=Text,
    next_attempt_at=UTCDateTime,
    delivered_at=UTCDateTime,
    reply_id=Uuid,
    attempts=Integer,
)
