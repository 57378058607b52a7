"""The publisher gateway: agency systems put reports on the bus, and know what was accepted.

Two front doors over one pipeline: HTTP (``oix gateway run``, FastAPI) and the
Python SDK (:class:`services.gateway.sdk.Publisher`). Both validate, fill
the header, sign with the agency's key, route as the agreement says, and
answer only after the broker's acknowledgement.
"""

from services.gateway._errors import (
    BrokerUnavailableError,
    ForbiddenError,
    GatewayError,
    IdempotencyConflictError,
    MalformedReportError,
    NotFoundError,
    PayloadTooLargeError,
    ReportRejectedError,
    ServiceUnavailableError,
    ShuttingDownError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from services.gateway._pipeline import Pipeline, Status, Submission
from services.gateway._results import Accepted, Delivery, Outcome
from services.gateway._service import GatewayServer, GatewayService, run_gateway
from services.gateway._settings import GatewaySettings, load_gateway_settings
from services.gateway._store import PartnerAck
from services.gateway._tokens import create_token, hash_token, revoke_token
from services.gateway._up import run_in_up
from services.gateway.sdk import Publisher

__all__ = [
    "Accepted",
    "BrokerUnavailableError",
    "Delivery",
    "ForbiddenError",
    "GatewayError",
    "GatewayServer",
    "GatewayService",
    "GatewaySettings",
    "IdempotencyConflictError",
    "MalformedReportError",
    "NotFoundError",
    "Outcome",
    "PartnerAck",
    "PayloadTooLargeError",
    "Pipeline",
    "Publisher",
    "ReportRejectedError",
    "ServiceUnavailableError",
    "ShuttingDownError",
    "Status",
    "Submission",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "create_token",
    "hash_token",
    "load_gateway_settings",
    "revoke_token",
    "run_gateway",
    "run_in_up",
]
