"""Bearer-token authentication: JWKS cache -> verifier -> principal -> ASGI middleware."""
