"""The JSON API (django-ninja); its OpenAPI schema is served at /api/openapi.json."""

from django.core.exceptions import ValidationError
from ninja import NinjaAPI

from datasets.api import router as datasets_router
from rating.api import router as rating_router
from rating.api import vote_openapi_path
from rating.services import RatingError


class TwoafcAPI(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        """The operations' schema plus the vote endpoint, a plain view beside the API."""
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        schema["paths"]["/api/sessions/{token}/votes"] = vote_openapi_path()
        return schema


api = TwoafcAPI(title="twoafc", version="1", urls_namespace="api")
api.add_router("/", rating_router)
api.add_router("/datasets", datasets_router)


@api.exception_handler(RatingError)
def rating_error(request, error: RatingError):
    return api.create_response(
        request, {"detail": str(error), "reason": error.reason}, status=error.status
    )


@api.exception_handler(ValidationError)
def validation_error(request, error: ValidationError):
    return api.create_response(request, {"detail": " ".join(error.messages)}, status=400)
