import time
from tests.fleet.conftest import Fleet, MiB
from tests.integration.helpers import PatternStream, create_upload, patch_stream

def status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1]) // 1024

def test_rss(fleet: Fleet) -> None:
    a = fleet.start_node()
    time.sleep(1)
    print("idle", status(a.pid, "VmRSS"), status(a.pid, "VmHWM"))
    source = PatternStream(512 * MiB, seed=1)
    url = create_upload(a.url, source.size, {"filename": "big"})
    t = time.monotonic()
    reply = patch_stream(url, 0, source.chunks(), source.size, timeout=600)
    print("status", reply.status, "secs", time.monotonic() - t)
    print("after", status(a.pid, "VmRSS"), status(a.pid, "VmHWM"))
