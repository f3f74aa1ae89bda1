from django.apps import AppConfig


class RatingConfig(AppConfig):
    name = "rating"
    default_auto_field = "django.db.models.BigAutoField"
