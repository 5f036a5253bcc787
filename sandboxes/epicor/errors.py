"""Epicor's error answers: the exception a rule raises and the body it is answered with."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response

from sandboxes.kit.routes import json_response

# ---- errors ----------------------------------------------------------------------------------

BO_EXCEPTION = "Ice.Common.BusinessObjectException"
ODATA_EXCEPTION = "ODataException"
API_EXCEPTION = "Epicor.RESTApi.ErrorHandling.ApiException"
NOT_FOUND_EXCEPTION = "Ice.Common.RecordNotFoundException"
DUPLICATE_EXCEPTION = "Ice.Common.DuplicateRecordException"
BL_EXCEPTION = "Ice.BLException"
REASONS = {
    400: "REST API Exception", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 410: "Gone", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


class EpicorError(Exception):
    """An answer in Epicor's error shape: status, message, ErrorType and the failing field."""

    def __init__(self, status: int, message: str, error_type: str | None = BO_EXCEPTION,
                 table: str = "", field_name: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.table = table
        self.field_name = field_name


def epicor_error_body(status: int, message: str, error_type: str | None = None,
                      table: str = "", field_name: str = "") -> dict[str, Any]:
    detail: dict[str, Any] = {"Message": message, "Type": "Error"}
    if table:
        detail["Table"] = table
    if field_name:
        detail["Field"] = field_name
    return {
        "HttpStatus": status,
        "ReasonPhrase": REASONS.get(status, "REST API Exception"),
        "ErrorMessage": message,
        "ErrorType": error_type,
        "ErrorDetails": [detail],
        "CorrelationId": str(uuid.uuid4()),
    }


def epicor_json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return json_response(data, status, headers, default=str)  # dates and decimals as text


def odata_error(message: str) -> EpicorError:
    return EpicorError(400, message, ODATA_EXCEPTION)
