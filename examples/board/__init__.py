"""The bastion demo: a team board that shows every guard working.

``make demo`` serves it (``uvicorn --app-dir examples board.app:app --no-proxy-headers``).
Its modules:

- ``settings``  configuration from the environment, read once;
- ``db``        the data, through SQLAlchemy 2: SQLite by default, PostgreSQL by URL;
- ``schemas``   what each action takes and what it may send back (pydantic);
- ``core``      the objects the rest share: the settings, the database, the ``Bastion``;
- ``actions``   every server action, each with its policy and rate limit;
- ``pages``     the HTML pages, which render the actions' forms;
- ``app``       the Starlette app that puts them together.

Its tests are in ``tests`` (``make test`` runs them, on SQLite and PostgreSQL).
"""
