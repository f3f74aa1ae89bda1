from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve

from rating.api import post_vote

from .api import api

urlpatterns = [
    # First: the most frequent request is resolved without trying the others.
    path("api/sessions/<uuid:token>/votes", post_vote, name="vote"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("", include("rating.urls")),
    path("", include("datasets.urls")),
    path("", include("analytics.urls")),
]


def serve_media(request, path):
    # MEDIA_ROOT is read per request, so a changed setting (tests) is honoured.
    return serve(request, path, document_root=settings.MEDIA_ROOT)


if settings.SERVE_MEDIA:
    urlpatterns += [re_path(r"^media/(?P<path>.*)$", serve_media)]
