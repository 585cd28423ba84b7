"""The WebSocket control-message codec, flow-control books and handshake rules."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freight.errors import (
    ChecksumMismatch,
    FreightError,
    InsufficientStorage,
    Unauthorized,
    UploadLocked,
    UploadNotFound,
)
from freight.protocol.ws_messages import (
    MAX_CONTROL_SIZE,
    MAX_FRAME_HEADER,
    MAX_INT64,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Credit,
    CreditExceeded,
    Done,
    ErrorReply,
    Finished,
    FrameHeader,
    FrameTooLarge,
    InvalidMessage,
    Ready,
    ReceiveWindow,
    Resume,
    Start,
    apply_mask,
    build_frame_header,
    build_message,
    close_code_for,
    error_reply,
    is_same_origin,
    parse_client_message,
    parse_frame_header,
    parse_server_message,
)

MiB = 1024 * 1024

sizes = st.integers(min_value=0, max_value=MAX_INT64)
upload_ids = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1)
upload_ids = upload_ids.filter(lambda s: len(s) <= 128)
sha256s = st.text("0123456789abcdef", min_size=64, max_size=64)
# Any Unicode a JSON string can carry and UTF-8 can encode, without NUL.
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1)
names = texts.filter(lambda s: len(s) <= 1024)
frames = st.integers(min_value=1, max_value=MAX_INT64)

client_messages = st.one_of(
    st.builds(
        Start,
        name=names,
        size=sizes,
        sha256=st.none() | sha256s,
        token=st.none() | texts.filter(lambda s: len(s) <= 1024),
        max_frame=st.none() | frames,
    ),
    st.builds(
        Resume,
        id=upload_ids,
        sha256=st.none() | sha256s,
        token=st.none() | texts.filter(lambda s: len(s) <= 1024),
        max_frame=st.none() | frames,
    ),
    st.builds(Done, sha256=st.none() | sha256s),
)
server_messages = st.one_of(
    st.builds(
        Ready,
        id=upload_ids,
        offset=sizes,
        size=sizes,
        credit=sizes,
        max_frame=frames,
        url=names,
    ),
    st.builds(Credit, offset=sizes, credit=sizes),
    st.builds(Finished, id=upload_ids, url=names, sha256=sha256s, size=sizes),
    st.builds(
        ErrorReply,
        code=st.from_regex(r"ERR_[A-Z0-9_]{1,20}", fullmatch=True),
        message=texts.filter(lambda s: len(s) <= 2048),
        status=st.integers(min_value=100, max_value=599),
        details=st.dictionaries(
            st.sampled_from(["offset", "missing", "sha256", "max_size"]),
            st.integers(0, 2**40) | st.lists(st.integers(0, 100), max_size=3),
            max_size=2,
        ),
    ),
)


# round trips --------------------------------------------------------------------------


@given(client_messages)
def test_client_messages_round_trip(message: Start | Resume | Done) -> None:
    text = build_message(message)
    if len(text.encode()) <= MAX_CONTROL_SIZE:
        assert parse_client_message(text) == message
        assert parse_client_message(text.encode()) == message


@given(server_messages)
def test_server_messages_round_trip(message: Any) -> None:
    text = build_message(message)
    if len(text.encode()) <= MAX_CONTROL_SIZE:
        assert parse_server_message(text) == message


def test_optional_fields_are_left_out() -> None:
    assert json.loads(build_message(Done())) == {"op": "done"}
    assert json.loads(build_message(Start(name="a", size=3))) == {
        "op": "start",
        "name": "a",
        "size": 3,
    }


def test_sha256_is_normalised_to_lowercase() -> None:
    message = parse_client_message(json.dumps({"op": "done", "sha256": "AB" * 32}))
    assert message == Done(sha256="ab" * 32)


def test_unknown_fields_are_ignored() -> None:
    text = json.dumps({"op": "resume", "id": "abc", "future": {"x": 1}})
    assert parse_client_message(text) == Resume(id="abc")


def test_error_reply_carries_code_status_and_details() -> None:
    reply = error_reply(UploadLocked("busy"))
    assert json.loads(build_message(reply)) == {
        "op": "error",
        "code": "ERR_UPLOAD_LOCKED",
        "message": "busy",
        "status": 423,
    }
    mismatch = error_reply(ChecksumMismatch("no", sha256="ab" * 32))
    assert json.loads(build_message(mismatch))["sha256"] == "ab" * 32


def test_details_cannot_shadow_protocol_fields() -> None:
    reply = ErrorReply("ERR_X", "m", 400, {"op": "finished", "code": "ERR_Y", "status": 200})
    assert json.loads(build_message(reply)) == {
        "op": "error",
        "code": "ERR_X",
        "message": "m",
        "status": 400,
    }


# garbage ------------------------------------------------------------------------------


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_garbage_gives_a_typed_error(data: bytes | str) -> None:
    for parse in (parse_client_message, parse_server_message):
        try:
            parse(data)
        except InvalidMessage as exc:
            assert exc.code == "ERR_INVALID_MESSAGE"
            assert exc.status == 400
            assert exc.details["field"]


FIELD_NAMES = (
    *("name", "size", "id", "sha256", "token", "max_frame"),
    *("offset", "credit", "url", "code", "message", "status"),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@given(
    st.sampled_from(["start", "resume", "done", "ready", "credit", "finished", "error", "x"]),
    st.dictionaries(
        st.sampled_from(FIELD_NAMES),
        json_values,
    ),
)
def test_json_objects_with_any_field_values_give_a_result_or_a_typed_error(
    op: str, fields: dict[str, Any]
) -> None:
    text = json.dumps({**fields, "op": op})
    for parse in (parse_client_message, parse_server_message):
        with contextlib.suppress(InvalidMessage):
            parse(text)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("not json", "op"),
        ("[1, 2]", "op"),
        ('"start"', "op"),
        ("{}", "op"),
        ('{"op": "upload"}', "op"),
        ('{"op": 7}', "op"),
        ('{"op": "start", "size": 1}', "name"),
        ('{"op": "start", "name": "a"}', "size"),
        ('{"op": "start", "name": "", "size": 1}', "name"),
        ('{"op": "start", "name": "a", "size": -1}', "size"),
        ('{"op": "start", "name": "a", "size": 1.0}', "size"),
        ('{"op": "start", "name": "a", "size": true}', "size"),
        ('{"op": "start", "name": "a", "size": "1"}', "size"),
        (f'{{"op": "start", "name": "a", "size": {2**63}}}', "size"),
        ('{"op": "start", "name": "a\\u0000b", "size": 1}', "name"),
        ('{"op": "start", "name": "\\ud800", "size": 1}', "name"),
        ('{"op": "start", "name": "a", "size": 1, "max_frame": 0}', "max_frame"),
        ('{"op": "start", "name": "a", "size": 1, "sha256": "abc"}', "sha256"),
        ('{"op": "resume"}', "id"),
        ('{"op": "resume", "id": "../../etc/passwd"}', "id"),
        ('{"op": "resume", "id": 12}', "id"),
        ('{"op": "done", "sha256": 5}', "sha256"),
    ],
)
def test_bad_client_messages_name_the_field(text: str, field: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_client_message(text)
    assert caught.value.details["field"] == field


def test_size_bound_is_checked_before_decoding() -> None:
    padding = " " * MAX_CONTROL_SIZE
    with pytest.raises(InvalidMessage, match="at most"):
        parse_client_message('{"op": "done"}' + padding)
    # Characters are counted as UTF-8 bytes: 3000 euro signs are 9000 bytes.
    with pytest.raises(InvalidMessage, match="at most"):
        parse_client_message(
            json.dumps({"op": "start", "name": "€" * 3000, "size": 1}, ensure_ascii=False)
        )
    assert parse_client_message('{"op":"done"}', max_size=13) == Done()
    with pytest.raises(InvalidMessage):
        parse_client_message('{"op":"done"}', max_size=12)


def test_deeply_nested_json_is_a_typed_error() -> None:
    with pytest.raises(InvalidMessage):
        parse_client_message("[" * 4000 + "]" * 4000)


def test_huge_integers_are_a_typed_error() -> None:
    with pytest.raises(InvalidMessage):
        parse_client_message('{"op": "start", "name": "a", "size": ' + "9" * 5000 + "}")


def test_server_error_codes_are_validated() -> None:
    with pytest.raises(InvalidMessage):
        parse_server_message('{"op": "error", "code": "oops", "message": "", "status": 400}')
    reply = parse_server_message('{"op":"error","code":"ERR_X","message":"","status":400,"a":1}')
    assert reply == ErrorReply("ERR_X", "", 400, {"a": 1})


# flow control -------------------------------------------------------------------------


def window(offset: int = 0, size: int = 100 * MiB) -> ReceiveWindow:
    return ReceiveWindow(offset=offset, size=size, credit=10 * MiB, window=4 * MiB, max_frame=MiB)


def test_credit_must_cover_a_window_and_a_frame() -> None:
    with pytest.raises(ValueError):
        ReceiveWindow(offset=0, size=1, credit=4 * MiB, window=4 * MiB, max_frame=1)


def test_opening_credit_stops_at_the_size() -> None:
    assert window().opening_credit == 10 * MiB
    assert window(offset=95 * MiB).opening_credit == 5 * MiB
    assert window(offset=7, size=7).opening_credit == 0


def test_frames_are_accounted_until_the_credit_runs_out() -> None:
    books = window()
    for _ in range(10):
        books.accept(MiB)
    assert books.position == 10 * MiB
    with pytest.raises(CreditExceeded) as caught:
        books.accept(1)
    assert caught.value.details == {"offset": 0, "limit": 10 * MiB}
    assert books.position == 10 * MiB  # a refused frame moves nothing


def test_oversized_frames_are_refused_before_the_credit_check() -> None:
    books = window()
    with pytest.raises(FrameTooLarge) as caught:
        books.accept(MiB + 1)
    assert caught.value.details == {"max_frame": MiB}
    assert books.position == 0


def test_a_grant_moves_the_limit_from_the_durable_offset() -> None:
    books = window()
    assert not books.window_full
    for _ in range(4):
        books.accept(MiB)
    assert books.window_full
    assert books.grant(4 * MiB) == Credit(offset=4 * MiB, credit=10 * MiB)
    assert books.limit == 14 * MiB
    assert not books.window_full
    books = window(offset=95 * MiB)
    for _ in range(4):
        books.accept(MiB)
    assert books.grant(99 * MiB) == Credit(offset=99 * MiB, credit=MiB)


@given(st.lists(st.integers(min_value=1, max_value=MiB), max_size=200))
def test_a_client_waiting_for_room_for_whole_frames_never_stalls(frames: list[int]) -> None:
    """The server grants whenever a window is full; the next frame then always fits."""
    books = ReceiveWindow(offset=0, size=MAX_INT64, credit=3 * MiB, window=2 * MiB, max_frame=MiB)
    for frame in frames:
        assert books.position + frame <= books.limit
        books.accept(frame)
        if books.window_full:
            books.grant(books.position)


# close codes and origins --------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (FrameTooLarge("x"), 1009),
        (FreightError("internal"), 1011),
        (InvalidMessage("x"), 4400),
        (CreditExceeded("x"), 4400),
        (Unauthorized("x"), 4401),
        (UploadNotFound("x"), 4404),
        (UploadLocked("x"), 4423),
        (ChecksumMismatch("x"), 4460),
        (InsufficientStorage("x"), 4507),
    ],
)
def test_close_codes(error: FreightError, code: int) -> None:
    assert close_code_for(error) == code


@pytest.mark.parametrize(
    ("origin", "scheme", "host", "same"),
    [
        ("http://nas.local:8080", "http", "nas.local:8080", True),
        ("HTTP://NAS.local:8080", "http", "nas.local:8080", True),
        ("http://nas.local", "http", "nas.local:80", True),
        ("https://nas.local:443", "https", "nas.local", True),
        ("http://[::1]:8080", "http", "[::1]:8080", True),
        ("http://nas.local:8081", "http", "nas.local:8080", False),
        ("https://nas.local:8080", "http", "nas.local:8080", False),
        ("http://evil.example", "http", "nas.local", False),
        ("http://nas.local.evil.example", "http", "nas.local", False),
        ("null", "http", "nas.local", False),
        ("", "http", "nas.local", False),
        ("file://", "http", "nas.local", False),
        ("http://user@nas.local", "http", "nas.local", False),
    ],
)
def test_same_origin(origin: str, scheme: str, host: str, same: bool) -> None:
    assert is_same_origin(origin, scheme=scheme, host=host) is same


@given(st.text(max_size=60), st.text(max_size=30))
def test_same_origin_never_raises(origin: str, host: str) -> None:
    assert isinstance(is_same_origin(origin, scheme="http", host=host), bool)


# frame headers ---------------------------------------------------------------------------

opcodes = st.sampled_from([OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG])
lengths = st.one_of(
    st.integers(min_value=0, max_value=130),
    st.integers(min_value=65_530, max_value=65_540),
    st.integers(min_value=0, max_value=MAX_INT64),
)
masks = st.none() | st.binary(min_size=4, max_size=4)


@given(opcodes, lengths, masks, st.booleans(), st.binary(max_size=20))
def test_frame_headers_round_trip(
    opcode: int, length: int, mask: bytes | None, fin: bool, after: bytes
) -> None:
    header = build_frame_header(opcode, length, mask, fin=fin)
    assert len(header) <= MAX_FRAME_HEADER
    parsed = parse_frame_header(header + after)  # what follows is the payload's business
    assert parsed == FrameHeader(
        fin=fin, rsv=0, opcode=opcode, mask=mask, length=length, size=len(header)
    )


@given(opcodes, lengths, masks)
def test_a_cut_header_says_how_much_it_needs(opcode: int, length: int, mask: bytes | None) -> None:
    header = build_frame_header(opcode, length, mask)
    for cut in range(len(header)):
        need = parse_frame_header(header[:cut])
        assert isinstance(need, int)
        assert cut < need <= len(header)


def test_frame_header_layout() -> None:
    # RFC 6455 5.7: a masked "Hello" and an unmasked 256-byte binary frame.
    assert build_frame_header(OP_TEXT, 5, bytes.fromhex("37fa213d")) == bytes.fromhex(
        "818537fa213d"
    )
    assert build_frame_header(OP_BINARY, 256) == bytes.fromhex("827e0100")
    assert build_frame_header(OP_BINARY, 65_536)[:2] == bytes.fromhex("827f")
    reserved = parse_frame_header(bytes.fromhex("f200"))
    assert isinstance(reserved, FrameHeader)
    assert (reserved.rsv, reserved.opcode, reserved.length) == (7, OP_BINARY, 0)


def test_frame_header_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        build_frame_header(OP_BINARY, -1)
    with pytest.raises(ValueError):
        build_frame_header(OP_BINARY, MAX_INT64 + 1)
    with pytest.raises(ValueError):
        build_frame_header(OP_BINARY, 1, b"abc")


def test_masking_matches_rfc_example() -> None:
    data = bytearray(b"Hello")
    apply_mask(bytes.fromhex("37fa213d"), data)
    assert data == bytes.fromhex("7f9f4d5158")


@given(st.binary(min_size=4, max_size=4), st.binary(max_size=300))
def test_masking_twice_gives_the_data_back(mask: bytes, payload: bytes) -> None:
    data = bytearray(payload)
    apply_mask(mask, data)
    assert data == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    apply_mask(mask, data)
    assert data == payload
