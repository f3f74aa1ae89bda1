from django.urls import path

from . import views

app_name = "rating"
urlpatterns = [path("rate/<slug:slug>/", views.rate, name="rate")]
