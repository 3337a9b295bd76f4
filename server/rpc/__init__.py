"""The API listener: ClearML's `/{service}.{action}` calls, from bytes to a handler and back.

    api        ApiApp: the ASGI app (routing, auth, envelope, errors)
    registry   `@endpoint(...)`: endpoint table, Request (typed field access), CallContext
    compat     the endpoint ledger: the ClearML schema's endpoints, declined or not yet, and the docs table
    schema     the field types of what the API stores, in one declarative table
    offload    handlers run off the event loop on a bounded thread pool
    guard      read timeouts for the listeners (slow clients cannot hold connections)
    jsonutil   fast JSON (orjson) with the standard library's leniency
"""
