"""The webhook's request body, from the bytes received to a JSON value (../shared/SPEC.md,
"Events in"): the size limit holds however the body is framed (`Content-Length` or chunked)
and applies to the decoded bytes of a compressed body; gzip and deflate are decoded, any
other `Content-Encoding` is 415; a document nested deeper than MAX_JSON_DEPTH is 400.
"""

import json
import re
import zlib
from itertools import accumulate

from flask import request
from werkzeug.wsgi import get_input_stream

from service.api.errors import abort

# An event nests two levels (the event, its `data`); 32 leaves room for fields senders add.
# The parser's own limit (the interpreter's recursion limit, about 1,000 less the stack in
# use) is neither stated nor stable, so a deeper document is refused by this one.
MAX_JSON_DEPTH = 32

ACCEPTED_ENCODINGS = "gzip, deflate (zlib or raw) or identity"

# Senders write one gzip member; each costs a decompressor, so a body of thousands of empty
# members is refused instead of walked (RFC 1952 2.2 allows several, not how many).
MAX_GZIP_MEMBERS = 16

GZIP = zlib.MAX_WBITS | 16
ZLIB = zlib.MAX_WBITS
RAW_DEFLATE = -zlib.MAX_WBITS

# What is not a bracket of the document: a JSON string, escapes included (unrolled so that
# it runs without backtracking), or a run of anything but brackets and quotes.
NOT_BRACKETS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[^\[\]{}"]+', re.DOTALL)
BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def read_body(limit):
    """The body as received and as decoded: `(wire, decoded)` bytes, the same object when the
    body is not encoded. `limit` is MAX_CONTENT_LENGTH in bytes.

    At most `limit + 1` bytes are read from the stream, whatever the framing, and at most
    `limit + 1` are inflated. Aborts with 413 `payload_too_large` when either side is over
    `limit`, 415 `unsupported_encoding` for a `Content-Encoding` other than gzip, deflate
    or identity (checked before reading), and 400 `invalid_encoding` for corrupt or truncated
    compressed data.
    """
    coding = content_coding(request.headers.get("Content-Encoding", ""))
    if (request.content_length or 0) > limit:
        too_large(limit)
    # A chunked body (no Content-Length, the stream ended by the server) is cut at the cap.
    stream = get_input_stream(request.environ, max_content_length=limit + 1)
    try:
        wire = stream.read()
    except Exception:  # noqa: BLE001
        # The server parses chunked framing while the app reads, and raises its own classes
        # (gunicorn: InvalidChunkSize, ChunkMissingTerminator, InvalidHeader...); werkzeug
        # raises ClientDisconnected for a body cut short. Whatever they are, they describe
        # the sender's bytes, not a fault of the service.
        wire = None
    if wire is None and request.content_length is None:
        abort(400, "invalid_framing", "The request body's chunked framing is malformed.")
    if wire is None or len(wire) < (request.content_length or 0):
        abort(400, "incomplete_body", "The body ended before its Content-Length.")
    if len(wire) > limit:
        too_large(limit)
    if coding is None:
        return wire, wire
    return wire, inflate(wire, coding, limit)


def content_coding(header):
    """The one coding of a `Content-Encoding` header value: None for identity (or no header),
    "gzip" or "deflate"; aborts with 415 `unsupported_encoding` for anything else, a list of
    several codings included (RFC 9110 8.4: codings listed in the order applied)."""
    if not header:
        return None
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return "deflate" if codings[0] == "deflate" else "gzip"
    abort(
        415,
        "unsupported_encoding",
        f"Content-Encoding {header.strip()[:64]!r} is not supported; send {ACCEPTED_ENCODINGS}.",
    )


def inflate(data, coding, limit):
    """Decode gzip (one or more members) or deflate (zlib-wrapped or raw) `data`, producing
    at most `limit + 1` bytes: 413 `payload_too_large` past `limit`, 400 `invalid_encoding`
    for corrupt, truncated or trailing data."""
    if coding == "gzip":
        wbits = GZIP
    else:
        # RFC 9110 8.4.1.2 means the zlib format, but some senders send raw deflate.
        wbits = ZLIB if has_zlib_header(data) else RAW_DEFLATE
    decoded = b""
    members = 0
    try:
        while True:
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise zlib.error("too many members")
            inflater = zlib.decompressobj(wbits)
            # max_length stays >= 1 (0 would mean no limit): len(decoded) <= limit here.
            decoded += inflater.decompress(data, limit + 1 - len(decoded))
            if len(decoded) > limit:
                too_large(limit)
            if not inflater.eof:
                raise zlib.error("truncated")
            data = inflater.unused_data
            # Concatenated gzip members decode as one body (RFC 1952 2.2).
            if not data or wbits != GZIP:
                break
    except zlib.error:
        invalid_encoding(coding)
    if data:
        invalid_encoding(coding)
    return decoded


def has_zlib_header(data):
    """Whether `data` starts with a zlib header (RFC 1950 2.2: deflate method, check bits)."""
    return len(data) >= 2 and data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0


def parse_json(data):
    """The JSON value of UTF-8 `data`: 400 `invalid_json` when it is not UTF-8 JSON, 400
    `json_too_deep` when arrays and objects nest deeper than MAX_JSON_DEPTH."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text)
    except RecursionError:
        # Deeper than the parser can go: far over MAX_JSON_DEPTH.
        too_deep()
    except ValueError as error:  # UnicodeDecodeError included
        # The parser's reason tells a sender which byte, or that a number is too long.
        abort(400, "invalid_json", f"The body is not valid UTF-8 JSON ({str(error)[:120]}).")
    if nests_deeper_than(text, MAX_JSON_DEPTH):
        too_deep()
    return value


def nests_deeper_than(text, limit):
    """Whether arrays and objects nest more than `limit` levels deep in the valid JSON
    document `text`.

    Linear, at C speed for a usual event: a document cannot nest deeper than its number of
    opening brackets, which is counted first; only past `limit` of them are the strings
    removed and the brackets walked.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = NOT_BRACKETS.sub("", text)
    return max(accumulate(map(BRACKET_STEP.get, brackets)), default=0) > limit


def too_large(limit):
    abort(413, "payload_too_large", f"The body is over the limit of {limit} bytes.")


def too_deep():
    abort(
        400,
        "json_too_deep",
        f"The JSON body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels.",
    )


def invalid_encoding(coding):
    abort(400, "invalid_encoding", f"The body is not valid {coding} data (Content-Encoding).")
