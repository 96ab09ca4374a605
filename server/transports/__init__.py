"""Transports: sockets only. Each adapts its wire bytes to a `LiveSession` through a codec."""
