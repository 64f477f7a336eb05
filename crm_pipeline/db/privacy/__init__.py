"""Personal data with an end: who a request is about, erasing their rows, and recognising them
when a sync or webhook brings them back (keyed hashes of their identifiers). The whole request,
database, raw lake and cache together, is `crm_pipeline.erasure`; see docs/privacy.md.
"""
