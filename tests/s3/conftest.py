from tests.pg.fixtures import pg_cluster, pg_dsn
from tests.s3.fixtures import s3_blobs, s3_bucket, seaweed

__all__ = ["pg_cluster", "pg_dsn", "s3_blobs", "s3_bucket", "seaweed"]
