"""Cluster mode (PostgreSQL): streams spread over nodes by leases in the database (docs/design.md)."""
