from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from django.views.static import serve

from rating.api import post_vote

from .api import api

admin.site.site_header = "twoafc administration"
admin.site.site_title = "twoafc admin"
admin.site.index_title = "Studies, raters, datasets and fits"

# Log in, log out and change the password, for researchers (who never see the admin); at
# /accounts/, where login_required sends anyone not logged in.
accounts = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            next_page="datasets:studies", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
]

urlpatterns = [
    # First: the most frequent request is resolved without trying the others.
    path("api/sessions/<uuid:token>/votes", post_vote, name="vote"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("accounts/", include(accounts)),
    path("", RedirectView.as_view(pattern_name="datasets:studies"), name="home"),
    # Browsers ask for it on pages without an icon link (the admin, the API docs).
    path("favicon.ico", RedirectView.as_view(url=static("twoafc/favicon.ico"), permanent=True)),
    path("", include("rating.urls")),
    path("", include("datasets.urls")),
    path("", include("analytics.urls")),
]


def serve_media(request, path):
    # MEDIA_ROOT is read per request, so a changed setting (tests) is honoured.
    return serve(request, path, document_root=settings.MEDIA_ROOT)


if settings.SERVE_MEDIA:
    urlpatterns += [re_path(r"^media/(?P<path>.*)$", serve_media)]
