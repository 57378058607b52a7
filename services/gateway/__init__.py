"""The publisher gateway: agency systems put reports on the bus, and know what was accepted.

Two front doors over one pipeline: HTTP (``oix gateway run``, FastAPI) and the
Python SDK (:class:`services.gateway.sdk.Publisher`). Both validate, fill
the header, sign with the agency's key, route as the agreement says, and
answer only after the broker's acknowledgement.

Names load on first use (see ``__init__.pyi``), so that ``oix --help`` and the SDK do
not import the web server.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
