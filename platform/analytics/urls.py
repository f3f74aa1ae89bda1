from django.urls import path

from . import views

app_name = "analytics"
urlpatterns = [
    path("studies/<slug:slug>/results/", views.results, name="results"),
    path("studies/<slug:slug>/results/report.html", views.report_file, name="report_file"),
]
