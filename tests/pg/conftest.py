from tests.pg.fixtures import pg_cluster, pg_dsn, pg_sessions

__all__ = ["pg_cluster", "pg_dsn", "pg_sessions"]
