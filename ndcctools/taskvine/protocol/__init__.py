"""TaskVine wire protocol 13: a codec of pure functions over bytes (no sockets here).

``Decoder(peer).feed(bytes)`` / ``next_event()`` turns what a peer sent into messages; every
message's ``encode()`` gives the bytes to send. See ``docs/architecture.md``.
"""

from .decoder import Decoder, parse_number
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .messages import (
    INLINE_STDOUT_MAX,
    LINE_MAX,
    MONITOR_INFO,
    PROTOCOL_VERSION,
    Alive,
    AvailableResults,
    CacheInvalid,
    CacheUpdate,
    Check,
    Complete,
    Data,
    DirItem,
    End,
    ErrorItem,
    Exit,
    Feature,
    FileItem,
    Get,
    GetFile,
    Hello,
    HttpGet,
    Info,
    Kill,
    Measured,
    MiniTaskMsg,
    Monitor,
    Mount,
    PeerGet,
    Put,
    PutUrl,
    Release,
    Resources,
    SendResults,
    SendStdout,
    StatusRequest,
    Stdout,
    SymlinkItem,
    TaskBody,
    TaskMsg,
    TransferHostPort,
    TransferPort,
    TransferSecret,
    Unlink,
    Update,
)
from .urlcode import decode as url_decode
from .urlcode import encode as url_encode

__all__ = [
    "INLINE_STDOUT_MAX", "LINE_MAX", "MONITOR_INFO", "PROTOCOL_VERSION", "Alive",
    "AvailableResults", "CacheInvalid", "CacheUpdate", "Check", "Complete", "Data", "Decoder",
    "DirItem", "End", "ErrorItem", "Exit", "Feature", "FileItem", "Get", "GetFile", "Hello",
    "HttpGet", "Info", "Kill", "LocalProtocolError", "Measured", "MiniTaskMsg", "Monitor", "Mount",
    "PeerGet", "ProtocolError", "Put", "PutUrl", "Release", "RemoteProtocolError", "Resources",
    "SendResults", "SendStdout", "StatusRequest", "Stdout", "SymlinkItem", "TaskBody", "TaskMsg",
    "TransferHostPort", "TransferSecret", "TransferPort", "Unlink", "Update", "parse_number",
    "url_decode", "url_encode",
]
