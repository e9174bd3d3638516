"""Protocol errors, named after who is at fault.

``RemoteProtocolError``: the peer sent something that breaks protocol 13 (unknown keyword,
malformed field, line too long). The connection to that peer is closed and the reason logged.
``LocalProtocolError``: our own code asked the codec to encode something that cannot go on the
wire (a name with whitespace where the protocol sends it unencoded, a negative size).
"""


class ProtocolError(Exception):
    """Base class of every error raised by the codec."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that do not follow the protocol."""


class LocalProtocolError(ProtocolError):
    """We tried to encode a message that cannot be represented on the wire."""
