"""A task's console on its way to the server.

    reader    pipe bytes -> the lines a terminal would show (\r, ANSI, long lines)
    spool     an append-only, fsync'd file of batches awaiting delivery (survives kill -9)
    shipper   batches `log` events to events.add_batch, redacted, in order, exactly once
"""
