"""Fixed statements for the hot paths, compiled once per dialect instead of once per call.

A Session executing a `text()` construct spends more CPU than the database does on a short
statement: cache-key generation, compilation lookup and the Session's own bookkeeping. A
`Statement` is compiled by SQLAlchemy once per dialect; each call converts its parameters
with the bind processors of their declared types (so UUIDs and UTC datetimes are stored the
same as through the ORM) and hands the dialect's SQL to `Connection.exec_driver_sql`. The
Connection still brings SQLAlchemy's events (SQLite's BEGIN IMMEDIATE), error wrapping (a
lost database is a 503) and pool handling. docs/benchmarks.md has the figures.
"""

from sqlalchemy import bindparam, text


class Statement:
    """One SQL statement with typed named parameters (`:name`), for any dialect.

    `lock` is a row-lock clause appended on PostgreSQL only: SQLite has no row locks, and
    its transactions are serialised whole instead (BEGIN IMMEDIATE, service.extensions).
    """

    def __init__(self, sql, lock=None, **types):
        self.sql = sql
        self.lock = lock
        self.binds = [bindparam(name, type_=type_) for name, type_ in types.items()]
        self._prepared = {}

    def _prepare(self, dialect):
        key = (dialect.name, dialect.driver)
        if key not in self._prepared:
            sql = (
                f"{self.sql} {self.lock}"
                if self.lock and dialect.name == "postgresql"
                else self.sql
            )
            compiled = text(sql).bindparams(*self.binds).compile(dialect=dialect)
            converters = {}
            for name, bind in compiled.binds.items():
                process = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if process is not None:
                    converters[name] = process
            order = tuple(compiled.positiontup) if compiled.positional else None
            self._prepared[key] = (compiled.string, converters, order)
        return self._prepared[key]

    def execute(self, connection, **params):
        """Run on a SQLAlchemy Connection (a Session's: `db.session.connection()`)."""
        sql, converters, order = self._prepare(connection.dialect)
        for name, process in converters.items():
            params[name] = process(params[name])
        if order is not None:
            return connection.exec_driver_sql(sql, tuple(params[name] for name in order))
        return connection.exec_driver_sql(sql, params)
