"""The TCP frame codec: round trips, any split of a stream, and bounded, typed failures."""

from __future__ import annotations

import hashlib
import struct
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freight.protocol.frames import (
    CLIENT_FRAMES,
    HEADER_SIZE,
    MAX_BUFFERED,
    MAX_DATA_PAYLOAD,
    MAX_NAME,
    MAX_OFFSET,
    SERVER_FRAMES,
    Accepted,
    Ack,
    ControlFrame,
    DataChunk,
    Done,
    ErrorFrame,
    FileInfo,
    Finished,
    Frame,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    FrameType,
    Get,
    Hello,
    MalformedFrame,
    Put,
    Resume,
    TruncatedStream,
    UnexpectedFrame,
    UnknownFrameType,
    Welcome,
    encode_data,
    encode_data_header,
)

ALL_FRAMES = CLIENT_FRAMES | SERVER_FRAMES
DIGEST = hashlib.sha256(b"freight").digest()

# strategies -------------------------------------------------------------------------------------

offsets = st.integers(0, MAX_OFFSET)
digests = st.binary(min_size=32, max_size=32)
ids = st.text("abcXYZ019_-", min_size=1, max_size=128)
names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=64
)
codes = st.from_regex(r"ERR_[A-Z0-9_]{1,60}", fullmatch=True)


@st.composite
def sized(draw: st.DrawFn) -> tuple[int, int, int]:
    size = draw(offsets)
    offset = draw(st.integers(0, size))
    return size, offset, draw(st.integers(0, size - offset))


def _file_info(args: tuple[tuple[int, int, int], bytes, str]) -> FileInfo:
    (size, offset, length), digest, name = args
    return FileInfo(size, offset, length, digest, name)


def _accepted(args: tuple[str, tuple[int, int, int]]) -> Accepted:
    upload_id, (size, offset, _) = args
    return Accepted(upload_id, offset, size)


control_frames: st.SearchStrategy[ControlFrame] = st.one_of(
    st.builds(Hello, st.integers(0, 0xFFFF), st.binary(max_size=64)),
    st.builds(Welcome, st.integers(1, 2**32 - 1), st.integers(1, MAX_DATA_PAYLOAD)),
    st.builds(Put, offsets, names, st.none() | digests),
    st.builds(Resume, ids),
    st.builds(Get, ids, offsets, st.none() | offsets),
    st.tuples(ids, sized()).map(_accepted),
    st.builds(Ack, offsets),
    st.builds(Done, digests),
    st.builds(Finished, ids, offsets, digests),
    st.tuples(sized(), digests, names).map(_file_info),
    st.builds(ErrorFrame, codes, names, st.integers(0, 2**64 - 1)),
)
data_frames = st.tuples(st.integers(0, 2**40), st.binary(min_size=1, max_size=300))
stream_items = st.lists(st.one_of(control_frames, data_frames), max_size=12)


def encode_item(item: ControlFrame | tuple[int, bytes]) -> bytes:
    if isinstance(item, tuple):
        return encode_data(*item)
    return item.encode()


def normalise(frames: list[Frame]) -> list[object]:
    """Control frames as they are; DATA pieces merged back into (offset, payload) frames."""
    merged: list[object] = []
    for frame in frames:
        if isinstance(frame, DataChunk):
            last = merged[-1] if merged else None
            if isinstance(last, list) and last[0] + len(last[1]) == frame.offset:
                last[1] += bytes(frame.data)
            else:
                merged.append([frame.offset, bytearray(frame.data)])
        else:
            merged.append(frame)
    return [(m[0], bytes(m[1])) if isinstance(m, list) else m for m in merged]


def expected_items(items: list[ControlFrame | tuple[int, bytes]]) -> list[object]:
    """What ``normalise`` makes of decoding ``items`` (adjacent contiguous DATA merge)."""
    chunks: list[Frame] = []
    for item in items:
        if isinstance(item, tuple):
            chunks.append(DataChunk(item[0], memoryview(item[1])))
        else:
            chunks.append(item)
    return normalise(chunks)


def decode_in_pieces(blob: bytes, cuts: list[int], accept: frozenset[FrameType]) -> list[Frame]:
    decoder = FrameDecoder(accept)
    frames: list[Frame] = []
    start = 0
    for cut in [*sorted(cuts), len(blob)]:
        # A copy per piece: DATA chunks stay valid after the next feed.
        frames += decoder.feed(bytes(blob[start:cut]))
        assert decoder.buffered <= MAX_BUFFERED
        start = cut
    decoder.eof()
    return frames


# round trips and splitting ----------------------------------------------------------------------


@given(control_frames)
def test_every_control_frame_round_trips(frame: ControlFrame) -> None:
    assert FrameDecoder(ALL_FRAMES).feed(frame.encode()) == [frame]


@given(stream_items, st.data())
def test_any_split_of_a_stream_decodes_to_the_same_frames(
    items: list[ControlFrame | tuple[int, bytes]], data: st.DataObject
) -> None:
    blob = b"".join(encode_item(item) for item in items)
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20))
    assert normalise(decode_in_pieces(blob, cuts, ALL_FRAMES)) == expected_items(items)


def test_byte_by_byte_equals_all_at_once() -> None:
    items = [Hello(token=b"t"), Put(5, "a", DIGEST), (0, b"hello"), Done(DIGEST)]
    blob = b"".join(encode_item(item) for item in items)
    one_by_one = decode_in_pieces(blob, list(range(len(blob))), ALL_FRAMES)
    assert normalise(one_by_one) == normalise(decode_in_pieces(blob, [], ALL_FRAMES))
    assert normalise(one_by_one) == expected_items(items)


def test_a_put_with_the_path_flag_round_trips() -> None:
    (put,) = FrameDecoder(CLIENT_FRAMES).feed(Put(5, "photos/2024/a.jpg", is_path=True).encode())
    assert put == Put(5, "photos/2024/a.jpg", None, is_path=True)
    (plain,) = FrameDecoder(CLIENT_FRAMES).feed(Put(5, "a/b").encode())
    assert isinstance(plain, Put) and not plain.is_path  # without the flag, only a name


def test_data_payload_is_a_view_of_the_fed_buffer() -> None:
    buffer = bytearray(encode_data(7, b"payload"))
    (chunk,) = FrameDecoder(CLIENT_FRAMES).feed(memoryview(buffer))
    assert isinstance(chunk, DataChunk)
    assert chunk.offset == 7 and chunk.end == 14
    buffer[-1:] = b"!"  # no copy was made: the chunk sees the change
    assert bytes(chunk.data) == b"payloa!"


def test_the_wire_format_is_the_documented_one() -> None:
    # docs/protocol.md, "Example": HELLO without a token, then PUT of 5 bytes named "a".
    assert Hello().encode() == bytes.fromhex("01 00 0000 00000006 46524754 0001")
    assert Put(5, "a").encode() == (
        bytes.fromhex("03 00 0000 00000029 0000000000000005") + bytes(32) + b"a"
    )
    assert encode_data_header(0, 5) == bytes.fromhex("07 00 0000 0000000d 0000000000000000")
    # The path flag (0x02): the name is the file's path in the folder sent.
    assert Put(5, "d/a", is_path=True).encode() == (
        bytes.fromhex("03 02 0000 0000002b 0000000000000005") + bytes(32) + b"d/a"
    )
    assert Ack(5).encode() == bytes.fromhex("08 00 0000 00000008 0000000000000005")


# failures ---------------------------------------------------------------------------------------


def header(frame_type: int, length: int, flags: int = 0, reserved: int = 0) -> bytes:
    return struct.pack(">BBHI", frame_type, flags, reserved, length)


@pytest.mark.parametrize(
    ("blob", "error"),
    [
        (header(0x00, 8), UnknownFrameType),
        (header(0x7F, 8), UnknownFrameType),
        (header(FrameType.WELCOME, 12), UnexpectedFrame),  # a server frame sent to a server
        (header(FrameType.DONE, 32, reserved=1), MalformedFrame),
        (header(FrameType.RESUME, 3, flags=0x01), MalformedFrame),
        (header(FrameType.PUT, 41, flags=0x04), MalformedFrame),
        # the path flag: a name that is no safe relative path
        (header(FrameType.PUT, 41, flags=0x02) + bytes(40) + b"/", MalformedFrame),
        (header(FrameType.PUT, 42, flags=0x02) + bytes(40) + b"..", MalformedFrame),
        (header(FrameType.DATA, 8), MalformedFrame),  # an empty DATA payload
        (header(FrameType.DONE, 31), MalformedFrame),
        (header(FrameType.DONE, 33), FrameTooLarge),
        (header(FrameType.RESUME, 0), MalformedFrame),
        (header(FrameType.RESUME, 129), FrameTooLarge),
        (header(FrameType.HELLO, 2**32 - 1), FrameTooLarge),
        (header(FrameType.DATA, 8 + MAX_DATA_PAYLOAD + 1), FrameTooLarge),
        (header(FrameType.HELLO, 6) + b"HTTP\x00\x01", MalformedFrame),  # no magic
        (header(FrameType.RESUME, 3) + b"a/b", MalformedFrame),
        (header(FrameType.PUT, 41) + bytes(8) + b"\x01" + bytes(31) + b"a", MalformedFrame),
        (header(FrameType.PUT, 41) + bytes(40) + b"\xff", MalformedFrame),  # not UTF-8
        (header(FrameType.GET, 17) + b"\xff" * 8 + bytes(8) + b"a", MalformedFrame),
        (header(FrameType.DATA, 9) + b"\xff" * 8 + b"x", MalformedFrame),
        (header(FrameType.ERROR, 12) + bytes(8) + b"\x03" + b"bad", MalformedFrame),
        (header(FrameType.ERROR, 14) + bytes(8) + b"\x09" + b"ERR_X", MalformedFrame),
        (b"GET / HTTP/1.1\r\n", UnknownFrameType),
    ],
)
def test_bad_frames_raise_typed_errors(blob: bytes, error: type[FrameError]) -> None:
    decoder = FrameDecoder(CLIENT_FRAMES)
    with pytest.raises(error) as raised:
        decoder.feed(blob)
    assert raised.value.code.startswith("ERR_")
    with pytest.raises(error):  # a failed decoder stays failed
        decoder.feed(Hello().encode())


def test_an_oversized_length_fails_on_the_header_alone() -> None:
    decoder = FrameDecoder(CLIENT_FRAMES)
    decoder.feed(header(FrameType.PUT, 2**31)[:7])
    with pytest.raises(FrameTooLarge):
        decoder.feed(header(FrameType.PUT, 2**31)[7:])


def test_max_data_is_the_receivers_bound() -> None:
    decoder = FrameDecoder(CLIENT_FRAMES, max_data=1024)
    decoder.feed(encode_data(0, bytes(1024)))
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_data_header(1024, 1025))


@given(st.binary(max_size=4096), st.lists(st.integers(0, 4096), max_size=8))
def test_garbage_gives_frames_or_a_typed_error_and_stays_bounded(
    blob: bytes, cuts: list[int]
) -> None:
    decoder = FrameDecoder(ALL_FRAMES)
    start = 0
    try:
        for cut in [*sorted(c for c in cuts if c <= len(blob)), len(blob)]:
            decoder.feed(blob[start:cut])
            assert decoder.buffered <= MAX_BUFFERED
            start = cut
        decoder.eof()
    except FrameError as exc:
        assert exc.code.startswith("ERR_")
    assert decoder.capacity == MAX_BUFFERED


@given(stream_items, st.data())
def test_a_truncated_stream_is_a_typed_error(
    items: list[ControlFrame | tuple[int, bytes]], data: st.DataObject
) -> None:
    blob = b"".join(encode_item(item) for item in items)
    if not blob:
        return
    cut = data.draw(st.integers(0, len(blob) - 1))
    decoder = FrameDecoder(ALL_FRAMES)
    decoder.feed(blob[:cut])
    if decoder.at_boundary:
        decoder.eof()  # the cut fell between two frames: nothing is missing
    else:
        with pytest.raises(TruncatedStream):
            decoder.eof()


def test_a_huge_announced_body_allocates_nothing() -> None:
    decoder = FrameDecoder(ALL_FRAMES)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        decoder.feed(encode_data_header(0, MAX_DATA_PAYLOAD))  # a 16 MiB payload announced
        for _ in range(64):
            decoder.feed(bytes(1024))  # ...arriving: handed through as views, never kept
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 64 * 1024
    assert decoder.buffered == 0


# encoders refuse what decoders refuse ----------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Put(-1),
        lambda: Put(MAX_OFFSET + 1),
        lambda: Put(1, "x" * (MAX_NAME + 1)),
        lambda: Put(1, "a\x00b"),
        lambda: Put(1, "\udcff"),
        lambda: Put(1, sha256=b"short"),
        lambda: Resume(""),
        lambda: Resume("a/b"),
        lambda: Resume("x" * 129),
        lambda: Get("id", offset=-1),
        lambda: Accepted("id", offset=2, size=1),
        lambda: FileInfo(10, 5, 6, DIGEST),
        lambda: Welcome(0, 1),
        lambda: Welcome(1, MAX_DATA_PAYLOAD + 1),
        lambda: ErrorFrame("NOPE"),
        lambda: Hello(token=bytes(1025)),
        lambda: encode_data_header(0, 0),
        lambda: encode_data_header(0, MAX_DATA_PAYLOAD + 1),
        lambda: encode_data_header(MAX_OFFSET, 1),
    ],
)
def test_invalid_frames_cannot_be_built(build: object) -> None:
    with pytest.raises(FrameError):
        build()  # type: ignore[operator]


def test_limits_are_consistent() -> None:
    assert HEADER_SIZE == 8
    assert MAX_BUFFERED == HEADER_SIZE + 9 + 64 + 1024  # the largest control body is ERROR's
