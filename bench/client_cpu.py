"""The report's section on freight's own clients: ``freight send`` CPU beside the floor.

A client that sends a file and checks its SHA-256 must at least read the file once and hash
it once. The floor, measured in the same run: curl's client CPU for the same upload (one
tus ``PATCH -T`` of the file into freight, fsync never) plus a tool hashing the file:
``sha256sum`` (coreutils) as issue 15 sets it, and ``openssl dgst -sha256``, whose SHA-256
is the one Python's ``hashlib`` uses (far cheaper than coreutils' on CPUs with SHA
extensions), as the stricter floor. ``freight send`` pays about 0.25 s per run to start
Python and import its libraries, which neither curl nor the tools do.
"""

from __future__ import annotations

from bench.measure import Spread
from bench.model import Results

__all__ = ["CURL_TUS", "FLOORS", "SEND_TARGETS", "client_cpu_section", "ws_server_cpu"]

CURL_TUS = "freight tus PATCH [never]"
FLOORS = ("sha256sum file", "openssl dgst -sha256 file")
SEND_TARGETS = (  # (protocol, target, goal as a multiple of the sha256sum floor)
    ("tus", "freight send tus [never]", 1.0),
    ("chunks x4", "freight chunks x4 [never]", 1.0),
    ("ws", "freight ws [never]", 1.5),
    ("tcp", "freight tcp [never]", 1.0),
)
WS_SERVER_GOAL = 1.5  # the WebSocket server's CPU per GiB, as a multiple of the tus PATCH's


def _median(value: Spread | None) -> float | None:
    return None if value is None else value.median


def _floor(results: Results, tool: str) -> float | None:
    curl = _median(results.client_cpu_per_gib(CURL_TUS))
    hashing = _median(results.cpu_per_gib(tool))
    return None if curl is None or hashing is None else curl + hashing


def _fmt(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{suffix}"


def ws_server_cpu(results: Results) -> tuple[float | None, float | None]:
    """Server CPU per GiB (median) of the WebSocket and the tus PATCH upload, fsync never."""
    return (
        _median(results.cpu_per_gib("freight ws [never]")),
        _median(results.cpu_per_gib(CURL_TUS)),
    )


def client_cpu_section(results: Results) -> list[str]:
    """The table and verdicts; nothing when the run measured no floor."""
    floors = {tool: _floor(results, tool) for tool in FLOORS}
    if all(value is None for value in floors.values()):
        return []
    header = ["freight send", "client CPU s/GiB (min-max)"]
    header += [f"floor: curl + {tool.split()[0]}" for tool in FLOORS]
    header += ["x sha256sum floor", "goal", "verdict", "x openssl floor"]
    rows = []
    for protocol, target, goal in SEND_TARGETS:
        spread = results.client_cpu_per_gib(target)
        ours = _median(spread)
        ratios = [None if ours is None or not floor else ours / floor for floor in floors.values()]
        verdict = "not measured"
        if ratios[0] is not None:
            verdict = "met" if ratios[0] <= goal else "**missed**"
        cpu = "-" if spread is None else f"{spread.median:.2f} ({spread.low:.2f}-{spread.high:.2f})"
        rows.append(
            [
                protocol,
                cpu,
                *(_fmt(floor) for floor in floors.values()),
                _fmt(ratios[0], "x"),
                f"<= {goal:g}x",
                verdict,
                _fmt(ratios[1], "x"),
            ]
        )
    lines = ["## freight send: client CPU per GiB beside the floor (issue 15)", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    ws, tus = ws_server_cpu(results)
    if ws is not None and tus:
        met = "met" if ws <= WS_SERVER_GOAL * tus else "**missed**"
        lines += [
            "",
            f"WebSocket server CPU: {ws:.2f} s/GiB, {ws / tus:.2f}x the tus PATCH's "
            f"{tus:.2f} (goal <= {WS_SERVER_GOAL:g}x): {met}.",
        ]
    curl = _median(results.client_cpu_per_gib(CURL_TUS))
    tools = ", ".join(f"{tool} {_fmt(_median(results.cpu_per_gib(tool)))}" for tool in FLOORS)
    lines += [
        "",
        f"Floor parts (s/GiB, median): curl's tus PATCH {_fmt(curl)}; {tools}. "
        "freight send's figure includes starting Python (about 0.25 s per run).",
        "",
    ]
    return lines
