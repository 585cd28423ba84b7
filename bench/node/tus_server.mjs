// @tus/server with @tus/file-store, as its README shows it, on 127.0.0.1.
// Usage: node tus_server.mjs PORT DIRECTORY   (started by bench/peers.py)
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const [port, directory] = process.argv.slice(2);
const server = new Server({ path: "/files", datastore: new FileStore({ directory }) });
server.listen({ host: "127.0.0.1", port: Number(port) });
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
