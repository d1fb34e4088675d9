"""The benchmark: load generation with wrk against this server, the same stack without auth, and the SDK."""
