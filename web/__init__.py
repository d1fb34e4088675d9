"""The HTTP application: routes, transport checks and the assembly of the whole stack."""
