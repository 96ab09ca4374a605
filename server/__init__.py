"""The I/O shell of Palabre: transports, HTTP routes, storage, wiring."""
