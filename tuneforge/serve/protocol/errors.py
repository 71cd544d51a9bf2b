"""The one error shape: `APIError` raised anywhere in a request, answered as OpenAI's envelope."""

from pydantic import BaseModel


class APIError(Exception):
    """An error the client caused (or may retry), rendered as OpenAI's envelope with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def response(self) -> "ErrorResponse":
        return ErrorResponse(error=ErrorInfo(message=self.message, type=self.type, param=self.param, code=self.code))

    def envelope(self) -> dict:
        return self.response().model_dump(mode="json")


def not_found(kind: str, object_id: str, param: str | None = None) -> APIError:
    return APIError(404, f"No {kind} found with id '{object_id}'.", param=param, code="not_found")


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error this server answers: `{"error": {message, type, param, code}}`, as OpenAI's."""

    error: ErrorInfo
