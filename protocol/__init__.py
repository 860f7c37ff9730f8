"""The wire: message kinds, encode/decode of a msgpack header plus one raw frame per array."""
from protocol.kinds import VERSION, Kind
from protocol.codec import Message, ProtocolError, VersionMismatch, decode, encode

__all__ = ["VERSION", "Kind", "Message", "ProtocolError", "VersionMismatch", "decode", "encode"]
