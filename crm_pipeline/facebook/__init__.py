"""Meta (Facebook) Marketing API access: the SDK-backed client, its governor and streams.

Dagster-free and configuration-free: callers hand it settings (see docs/architecture.md).
"""
