"""The liaison service: officers follow what partners released to their agency, and answer.

``oix liaison run --as LV-VRS`` follows exactly the feeds and bilateral
channels the agreement releases to the agency into its own store (SQLite
embedded, PostgreSQL in production), folds reports into events, and serves
officers an HTTP API with a live stream; acknowledgements and answers go
back through the agency's gateway; webhooks deliver reports to agency
systems; ``oix feed`` prints them in a terminal. See ``docs/liaison.md``.

Names load on first use (see ``__init__.pyi``), so that ``oix --help`` does not import FastAPI,
SQLAlchemy and the Prometheus client.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
