"""The run store: the one owner of every SQLite database the project writes.

Each database has a schema module listing its tables and an ordered list of migrations
(`migrate.py` applies them), and query modules with typed rows. No SQL lives outside this package.
"""
