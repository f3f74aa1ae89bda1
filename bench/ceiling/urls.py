"""``POST /ceiling/``: one INSERT through the app's own connection, a tiny JSON answer.

Same middleware, same database settings (persistent connections) as the app, so
the only difference from a vote is the work the view does.
"""

from django.db import connection
from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from twoafc.urls import urlpatterns as app_urlpatterns


@csrf_exempt
@require_POST
def ceiling(request):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bench_ceiling (payload) VALUES (%s) RETURNING id",
            [request.body[:200].decode("utf-8", "replace")],
        )
        (row_id,) = cursor.fetchone()
    return JsonResponse({"id": row_id}, status=201)


urlpatterns = [path("ceiling/", ceiling), *app_urlpatterns]
