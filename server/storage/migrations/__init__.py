"""Alembic's migration environment for the store's schema (server/storage/schema.py runs it).

    env.py            Alembic's entry: runs the revisions on the connection schema.py hands it
                      (PostgreSQL: under an advisory lock, so replicas starting together migrate once)
    script.py.mako    the template `alembic revision` fills for a new revision
    versions/         one module per schema change, r<rev>_<slug>.py, oldest first:
                      r0001_baseline   the schema of the last release before Alembic, and the
                                       upgrade steps that release ran itself for older data dirs

Every change to server/storage/tables.py is a new revision here (docs/operations.md, "Writing a
migration"); tests/server/test_migrations.py fails when the two disagree.
"""
