from django.urls import path

from . import views

app_name = "analytics"
urlpatterns = [path("studies/<slug:slug>/results/", views.results, name="results")]
