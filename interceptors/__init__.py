"""gRPC client/server interceptors and HTTP transports of meshlib (sync and aio)."""

__all__: list[str] = []
