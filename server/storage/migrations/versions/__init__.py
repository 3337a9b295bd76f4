"""The revisions, one module each; Alembic finds them by file, not by import."""
