"""tasks.* endpoints.

    crud     create, read, edit, clone, delete, and the task's parts (artifacts, models)
    params   hyper-parameters and configuration objects
    status   lifecycle endpoints: status changes and their side effects (queue, times, reset)
    batch    the *_many endpoints: one action per id, answered as succeeded/failed lists
    doc      task documents: default shape, loading, status changes with side effects, stored parts
"""
