"""The wire and the comm layer both sides use: codec, kinds, schema, sockets, liveness, in-flight limits, CURVE."""
from protocol.codec import decode, encode, parse
from protocol.kinds import VERSION, Kind
from protocol.message import Message, ProtocolError, VersionMismatch

__all__ = ["VERSION", "Kind", "Message", "ProtocolError", "VersionMismatch", "decode", "encode", "parse"]
