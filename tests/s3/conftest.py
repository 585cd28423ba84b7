from tests.s3.fixtures import s3_blobs, s3_bucket, seaweed

__all__ = ["s3_blobs", "s3_bucket", "seaweed"]
