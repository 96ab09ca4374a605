"""Pure parse/serialize of every wire protocol Palabre speaks, one module per protocol.

A codec knows a message format and nothing about sockets: it turns received text or bytes into
`stream.events` messages (raising `stream.errors.ProtocolError` on a client mistake) and server
events into text or bytes. The transports in `server/transports/` own the sockets and call these
functions. Each codec is tested against byte fixtures, without a network.

    native.py   the native WebSocket protocol of `/v1/stream` (docs/protocol.md)
"""
