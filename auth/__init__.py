"""Bearer-token authentication, one request path: credential -> jwt_verifier (jwks_cache, verification_cache) ->
claims -> token_rules (binding included) -> principal -> request_auth -> scope_gate; middleware runs it.
Tooling no request goes through lives in auth/tooling/."""
