"""Hosting OIX services: the hosting contract, ``oix up`` and what every command shares.

Below the services and above the core (it imports only :mod:`services.bus`):
a service imports from here to join the command line and ``oix up``; the
command line imports the services. See ``docs/extending.md``.
"""

from services.host._console import (
    EXIT_CONFIG,
    EXIT_ERROR,
    broker_settings_or_exit,
    err,
    fail,
    out,
    run,
    settings_or_exit,
)
from services.host._contract import HostedService, Ready, UpContext, UpHook, service_name
from services.host._offers import PUBLISHING, Offer, Offers, PublishingPath
from services.host._up import run_up

__all__ = [
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "PUBLISHING",
    "HostedService",
    "Offer",
    "Offers",
    "PublishingPath",
    "Ready",
    "UpContext",
    "UpHook",
    "broker_settings_or_exit",
    "err",
    "fail",
    "out",
    "run",
    "run_up",
    "service_name",
    "settings_or_exit",
]
