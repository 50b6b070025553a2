"""Transport adapters: move bytes between I/O libraries and the sans-I/O codecs."""
