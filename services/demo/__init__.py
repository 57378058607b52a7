"""The demo stream: the example reports of ``deploy/examples``, published through the SDK.

``oix demo`` publishes them once (or until Ctrl-C); inside ``oix up`` one
report every two seconds keeps the consoles and the audit store busy. A tool
on top of the gateway's SDK, not a service of the exchange itself.

Names load on first use (see ``__init__.pyi``).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
