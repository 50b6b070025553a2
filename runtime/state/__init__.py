"""Sans-I/O state machines: fed with messages (and times), they never touch a socket."""
