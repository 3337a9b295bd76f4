"""projects.* endpoints.

    crud     create, read, update, and the naming rules of project paths (a/b/c, basename)
    tree     what acts on a whole subtree: validate_delete, delete, move, merge
    stats    projects.get_all_ex: the projects page's listing, statistics in one grouped query
    queries  distinct values found under projects: tags, task parents, hyper-parameters, metrics,
             model metadata, user names
"""
