"""Tooling no request goes through: the doctor, refusal explanations for the log, the development issuer."""
