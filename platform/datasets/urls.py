from django.urls import path

from . import views

app_name = "datasets"
urlpatterns = [
    path("studies/<slug:slug>/download/", views.download_page, name="download"),
    path("studies/<slug:slug>/download/bapps.zip", views.download_zip, name="download-zip"),
]
