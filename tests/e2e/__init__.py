"""End-to-end tests: real server and agent processes talking TLS on loopback."""
