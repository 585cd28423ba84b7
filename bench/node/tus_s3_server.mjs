// @tus/server with @tus/s3-store, as its README shows it, on 127.0.0.1 in front of an
// S3-compatible store (started by bench/s3_section.py).
// Usage: node tus_s3_server.mjs PORT ENDPOINT BUCKET PART_SIZE
// Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; parts are staged in TMPDIR.
// No object tags (they only serve expiration), and, as in freight's store over plain
// HTTP, no default request checksums: the store's cheapest setting.
import { Server } from "@tus/server";
import { S3Store } from "@tus/s3-store";

const [port, endpoint, bucket, partSize] = process.argv.slice(2);
const datastore = new S3Store({
  partSize: Number(partSize),
  useTags: false,
  s3ClientConfig: {
    bucket,
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    credentials: {
      accessKeyId: process.env.AWS_ACCESS_KEY_ID,
      secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
    },
  },
});
const server = new Server({ path: "/files", datastore });
server.listen({ host: "127.0.0.1", port: Number(port) });
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
