"""Data: the connection pool and sessions, migrations, and the Redis client.

- `database`: the engine, the pool (sized, pre-pinged, bounded wait) and the unit of work;
- `migrations`: `python -m servicekit.data.migrations <service> <url>` runs a service's Alembic;
- `redis`: the Redis client, named after its service.
"""
