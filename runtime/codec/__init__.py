"""Sans-I/O codecs: bytes in, messages or sentinels out (no sockets, no asyncio)."""
