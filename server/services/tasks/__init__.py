"""tasks.* endpoints.

    crud     create, read, edit, clone, delete, and the task's parts (artifacts, models)
    params   hyper-parameters and configuration objects
    status   lifecycle endpoints: status changes and their side effects (queue, times, reset)
    wait     tasks.wait_status: long-poll a task's status (an agent hears an abort at once)
    batch    the *_many endpoints: one action per id, answered as succeeded/failed lists
    doc      task documents: default shape, loading, status changes with side effects, stored parts
    ex       get_all, get_all_ex, get_by_id_ex: filters, order, scroll paging, joined references
    filters  the list-field filter language (__$not/__$all/..., null, the `filters` form, ranges)
    slim     slim rows: the fields a query filters and sorts on, ordered by the database when it can
    people   user and company as {id, name} (the one seam to the users service)
    manage   get_types, move, validate, update_tags, make_public / make_private
    cleanup  what delete and reset remove (draft output models) and report (`urls`)
"""
